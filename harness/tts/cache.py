"""The speech cache: synthesised (and perturbed) lines as a fixture directory keyed by a hash.

A cache directory is an ordinary fixture directory (``manifest.yaml`` + 24 kHz mono PCM16 WAVs), so
the engine, ``voiceload fixtures list`` and the simulator's transcriber read it like the committed
one. An entry's id is a hash of everything that changes its audio: engine, voice, text, rate,
engine settings (model, version), the caller perturbation and the cache format version. A hit
does no synthesis; a miss synthesises, measures (harness.vad bounds, harness.audio fingerprint)
and adds the entry under a file lock, so concurrent runs sharing a cache do not lose entries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import soundfile as sf

from .. import audio, fixtures, vad
from .engines import Engines, Voice, cpu_seconds
from .render import SR, Caller, caller_audio, perturb

CACHE_VERSION = 1  # bump when the rendering pipeline changes what a key produces
CACHE_SUBDIR = Path(".voiceload-cache") / "tts"
CACHE_ENV = "VOICELOAD_TTS_CACHE"


@dataclass(frozen=True)
class Line:
    """One line to synthesise, as a caller says it (``source`` set: re-render a recorded fixture)."""

    text: str
    voice: Voice | None = None
    rate: float = 1.0
    caller: Caller = Caller()
    source: fixtures.Fixture | None = field(default=None, compare=False)

    def describe(self) -> str:
        parts = [str(self.voice) if self.voice else f"fixture:{self.source.id if self.source else '?'}"]
        if self.voice and self.rate != 1.0:
            parts.append(f"rate={self.rate:g}")
        c = self.caller
        if c.effective_snr is not None:
            parts.append(f"noise={c.noise}@{c.effective_snr:g}dB")
        if c.channel != "wideband":
            parts.append(f"channel={c.channel}")
        if c.gain_db:
            parts.append(f"gain={c.gain_db:+g}dB")
        return " ".join(parts)


def line_key(line: Line, engine_settings: dict[str, Any]) -> str:
    """sha256 over a canonical JSON of every input that changes the audio."""
    doc: dict[str, Any] = {"v": CACHE_VERSION, "fp": audio.FP_VERSION, "caller": line.caller.settings()}
    if line.source is not None:
        doc["source"] = {"fingerprint": line.source.fingerprint, "duration_ms": line.source.duration_ms}
    else:
        assert line.voice is not None
        doc.update(engine=line.voice.engine, voice=line.voice.name, text=line.text, rate=round(line.rate, 4),
                   settings=engine_settings)
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def fixture_id(line: Line, key: str) -> str:
    return ("say_" if line.source is None else "var_") + key[:20]


@dataclass
class CacheStats:
    hits: int = 0
    made: int = 0  # entries rendered and added (misses)
    synthesised: int = 0  # engine calls (variants of one line share one)
    speech_s: float = 0.0  # seconds of speech synthesised (engine output)
    cpu_s: float = 0.0  # CPU seconds spent in synthesis (this process and its children)
    wall_s: float = 0.0
    by_engine: dict[str, list[float]] = field(default_factory=dict)  # engine -> [speech_s, cpu_s, wall_s]


class SpeechCache:
    """One cache directory. ``get(line)`` returns the fixture, synthesising it only on a miss."""

    def __init__(self, directory: str | os.PathLike[str], engines: Engines | None = None) -> None:
        self.dir = Path(directory)
        self.engines = engines or Engines()
        self.stats = CacheStats()
        self._table: dict[str, fixtures.Fixture] | None = None
        self._raw: dict[tuple[str, str, str, float], tuple[np.ndarray, int]] = {}

    def entries(self) -> dict[str, fixtures.Fixture]:
        if self._table is None:
            self._table = self._read()
        return self._table

    def _read(self) -> dict[str, fixtures.Fixture]:
        if not (self.dir / fixtures.MANIFEST).exists():
            return {}
        try:
            return fixtures.load_manifest(self.dir)
        except fixtures.FixtureError:
            return {}  # a torn or stale cache is rebuilt entry by entry, never trusted

    def key(self, line: Line) -> str:
        settings = {} if line.voice is None else self.engines.get(line.voice.engine).settings(line.voice.name, line.rate)
        return line_key(line, settings)

    def lookup(self, line: Line) -> fixtures.Fixture | None:
        """The cached fixture for ``line`` or None (never synthesises)."""
        fx = self.entries().get(fixture_id(line, self.key(line)))
        return fx if fx is not None and fx.path.exists() else None

    def get(self, line: Line, *, use_case: str = "say") -> fixtures.Fixture:
        key = self.key(line)
        fid = fixture_id(line, key)
        fx = self.entries().get(fid)
        if fx is not None and fx.path.exists():
            self.stats.hits += 1
            return fx
        seed = int(key[:8], 16)
        pcm = self._render(line, seed)
        bounds = vad.speech_bounds(pcm, SR)
        if bounds is None and line.caller != Caller():
            # Noise so strong the VAD hears no utterance: where the caller speaks has not moved, so the
            # bounds (the true end of speech) come from the same line without the perturbation.
            bounds = (vad.speech_bounds(line.source.samples(), SR) if line.source is not None
                      else vad.speech_bounds(self._render(dataclasses.replace(line, caller=Caller()), seed), SR))
        fx = measure(pcm, bounds, fid, line, use_case, self._language(line))
        fx.directory = self.dir
        self._add(fx, pcm)
        self.stats.made += 1
        return fx

    def _language(self, line: Line) -> str:
        if line.source is not None:
            return line.source.language
        assert line.voice is not None
        return self.engines.get(line.voice.engine).language(line.voice.name)

    def _render(self, line: Line, seed: int) -> np.ndarray:
        if line.source is not None:
            x = line.source.samples().astype(np.float64) / 32768.0
            k = SR // 1000
            speech = x[line.source.speech_start_ms * k: line.source.speech_end_ms * k]
            y = perturb(x, speech, line.caller, np.random.default_rng(seed))
        else:
            speech, rate = self.synthesize(line)
            y = caller_audio(audio.resample(speech, rate, SR), line.caller, seed)
        return audio.to_int16(y * 32768.0)

    def synthesize(self, line: Line) -> tuple[np.ndarray, int]:
        """Raw engine output, memoised per (engine, voice, text, rate) for the variants of one line."""
        assert line.voice is not None
        raw_key = (line.voice.engine, line.voice.name, line.text, round(line.rate, 4))
        if raw_key in self._raw:
            return self._raw[raw_key]
        import time

        engine = self.engines.get(line.voice.engine)
        c0, w0 = cpu_seconds(), time.perf_counter()
        x, rate = engine.synthesize(line.text, line.voice.name, line.rate)
        cpu, wall, speech_s = cpu_seconds() - c0, time.perf_counter() - w0, len(x) / rate
        st = self.stats
        st.synthesised += 1
        st.speech_s, st.cpu_s, st.wall_s = st.speech_s + speech_s, st.cpu_s + cpu, st.wall_s + wall
        acc = st.by_engine.setdefault(line.voice.engine, [0.0, 0.0, 0.0])
        acc[0], acc[1], acc[2] = acc[0] + speech_s, acc[1] + cpu, acc[2] + wall
        self._raw[raw_key] = (x, rate)
        return x, rate

    def _add(self, fx: fixtures.Fixture, pcm: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{fx.id}.", suffix=".wav")
            os.close(fd)
            try:
                sf.write(tmp, pcm, SR, subtype="PCM_16", format="WAV")
                os.replace(tmp, fx.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            current = self._read()  # entries other runs added since we read
            current[fx.id] = fx
            fixtures.save_manifest(self.dir, current.values())
            self._table = current

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def measure(pcm: np.ndarray, bounds: tuple[int, int] | None, fid: str, line: Line, use_case: str,
            language: str) -> fixtures.Fixture:
    """A fixture entry: ``bounds`` from harness.vad.speech_bounds, the fingerprint of ``pcm`` - the same
    code the committed fixtures are measured with."""
    if bounds is None:
        raise fixtures.FixtureError(line.describe(), "say", f"no speech detected in the synthesised audio of "
                                                            f"{line.text!r}")
    return fixtures.Fixture(
        id=fid, file=f"{fid}.wav", text=line.text, language=language, use_case=use_case,
        speech_start_ms=bounds[0], speech_end_ms=bounds[1], duration_ms=len(pcm) * 1000 // SR,
        fingerprint=audio.fingerprint(pcm, SR),
        snr_db=line.caller.effective_snr, synth=line.describe(),
    )


def cache_dir(scenario_file: str | None, configured: str | None = None) -> Path:
    """``speech.cache_dir`` (relative to the scenario's directory), else $VOICELOAD_TTS_CACHE, else
    ``<scenario dir>/.voiceload-cache/tts``: caches live beside the scenarios that use them."""
    from .. import paths

    base = Path(scenario_file).resolve().parent if scenario_file else Path.cwd()
    if paths.SHIPPED_DIR in base.parents or base == paths.SHIPPED_DIR:
        base = Path.cwd()  # an example scenario inside the installed package: never write into site-packages
    if configured:
        p = Path(configured).expanduser()
        return p if p.is_absolute() else base / p
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return base / CACHE_SUBDIR
