"""Before load starts: turn every ``say:`` line (and every caller variant of every line) into a fixture.

``prepare_speech`` runs once per run, before any simulator or session starts, and never during load:
each (line, variant) is looked up in the speech cache and synthesised only on a miss. Sessions then
pick their caller variant round-robin by session seed (``variant_for``) and play
``fixture_for(...)`` like any committed fixture.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .. import fixtures
from .cache import CacheStats, Line, SpeechCache, cache_dir
from .engines import EngineError, Engines, parse_voice, release
from .render import Caller
from .spec import SpeechSpec, Variant


@dataclass
class Prepared(CacheStats):
    """What prepare_speech did (the cache's counters, filled as it works), for the run's speech line."""

    cache_dir: str = ""
    lines: int = 0


class SpeechError(ValueError):
    """A line that cannot be synthesised; ``str()`` names the scenario file and the field."""


def needs_speech(scenario: Any) -> bool:
    return bool(scenario.variants) or any(t.say is not None for t in scenario.conversation)


def scenario_cache(scenario: Any) -> Path:
    speech: SpeechSpec = scenario.speech or SpeechSpec()
    return cache_dir(scenario.file, speech.cache_dir)


def lines_of(scenario: Any) -> list[list[Line | None]]:
    """Per turn, per variant: the Line to render, or None where the recorded fixture plays unchanged."""
    speech: SpeechSpec = scenario.speech or SpeechSpec()
    variants: list[Variant] = scenario.variants or [Variant()]
    out: list[list[Line | None]] = []
    for turn in scenario.conversation:
        row: list[Line | None] = []
        for v in variants:
            if turn.say is not None:
                voice = parse_voice(turn.say.voice or v.voice or speech.voice, speech.engine)
                row.append(Line(text=turn.say.text, voice=voice, rate=round(speech.rate * turn.say.rate * v.rate, 4),
                                caller=v.caller))
            elif v.caller != Caller():
                src = fixtures.get_fixture(turn.fixture, scenario.fixtures_dir)
                row.append(Line(text=src.text, caller=v.caller, source=src))
            else:
                row.append(None)
        out.append(row)
    return out


def prepare_speech(scenario: Any, *, engines: Engines | None = None, progress: IO[str] | None = None) -> Prepared:
    """Fill ``variant_fixtures`` of every turn (synthesising cache misses); SpeechError on failure."""
    done = Prepared()
    if not needs_speech(scenario):
        return done
    speech: SpeechSpec = scenario.speech or SpeechSpec()
    cache = SpeechCache(scenario_cache(scenario), engines or Engines(azure_config=speech.azure))
    cache.stats = done
    done.cache_dir = str(cache.dir)
    rows = lines_of(scenario)
    _check_engines(scenario, cache, rows)
    if speech.note and progress is not None and _uses_default_engine(scenario):
        print(f"voiceload: speech: {speech.note}", file=progress)
    t0 = time.perf_counter()
    try:
        _prepare_rows(scenario, cache, rows, done)
    finally:
        release()
    speech.prepared = {"cache_dir": done.cache_dir, "lines": done.lines, "from_cache": done.hits, "made": done.made,
                       "synthesised": done.synthesised, "speech_s": round(done.speech_s, 2),
                       "synthesis_cpu_s": round(done.cpu_s, 3), "seconds": round(time.perf_counter() - t0, 3)}
    if progress is not None:
        print(f"voiceload: speech: {done.lines} line(s), {done.hits} from the cache, {done.made} made from "
              f"{done.synthesised} synthesised ({done.speech_s:.1f} s of speech) in {time.perf_counter() - t0:.2f} s "
              f"→ {cache.dir}", file=progress)
    return done


def _uses_default_engine(scenario: Any) -> bool:
    """Whether some say: line names no engine (so the run should say which one it got)."""
    speech: SpeechSpec = scenario.speech or SpeechSpec()
    return any(":" not in (t.say.voice or v.voice or speech.voice or "")
               for t in scenario.conversation if t.say is not None for v in scenario.variants or [Variant()])


def _prepare_rows(scenario: Any, cache: SpeechCache, rows: list[list[Line | None]], done: Prepared) -> None:
    for i, (turn, row) in enumerate(zip(scenario.conversation, rows)):
        pairs: list[tuple[str, str]] = []
        for line in row:
            if line is None:
                pairs.append((turn.fixture, str(fixtures._resolve(scenario.fixtures_dir))))
                continue
            done.lines += 1
            try:
                fx = cache.get(line, use_case=scenario.name)
            except (EngineError, fixtures.FixtureError, OSError) as exc:
                field = "say" if turn.say is not None else "fixture"
                raise SpeechError(f"{scenario.file}: conversation[{i}].{field}: {line.describe()}: {exc}") from None
            pairs.append((fx.id, str(cache.dir)))
        turn.variant_fixtures = pairs
        if turn.say is not None:
            turn.fixture = pairs[0][0]


def _check_engines(scenario: Any, cache: SpeechCache, rows: list[list[Line | None]]) -> None:
    """Every engine and voice that has lines to synthesise is usable (cached lines need none)."""
    seen: set[str] = set()
    for i, row in enumerate(rows):
        for line in row:
            if line is None or line.voice is None or str(line.voice) in seen:
                continue
            try:
                if cache.lookup(line) is not None:
                    continue
                cache.engines.get(line.voice.engine).check(line.voice.name)
            except EngineError as exc:
                raise SpeechError(f"{scenario.file}: conversation[{i}].say: voice {line.voice}: {exc}") from None
            seen.add(str(line.voice))


def variant_for(scenario: Any, seed: int) -> Variant | None:
    """The caller variant of a session: round-robin over the matrix by session seed."""
    return scenario.variants[seed % len(scenario.variants)] if scenario.variants else None


def fixture_for(scenario: Any, turn: Any, variant: Variant | None) -> fixtures.Fixture:
    """The fixture a session plays for ``turn`` (its variant's rendering once speech is prepared)."""
    if turn.variant_fixtures:
        fid, directory = turn.variant_fixtures[(variant.index if variant else 0) % len(turn.variant_fixtures)]
        return fixtures.get_fixture(fid, directory)
    if turn.say is not None:
        raise SpeechError(f"{scenario.file}: say: lines are synthesised by prepare_speech() before load starts")
    return fixtures.get_fixture(turn.fixture, scenario.fixtures_dir)


def speech_dirs(scenario: Any) -> list[str]:
    """Fixture directories other than fixtures_dir that the scenario plays from (for the simulator)."""
    out: list[str] = []
    for turn in scenario.conversation:
        for _, d in turn.variant_fixtures:
            if d not in out and Path(d) != fixtures._resolve(scenario.fixtures_dir):
                out.append(d)
    return out
