"""``conversation:`` of a scenario: each turn, its expectations, and checks that they can pass."""

from __future__ import annotations

from typing import Any

from . import schema as s
from .scenario_types import Expectations, TargetSpec, TurnSpec


def parse_turn(raw: Any, path: str, p: s.Problems, tool_names: list[str] | None = None,
          speech: Any = None) -> TurnSpec:
    if isinstance(raw, str):
        raw = {"fixture": raw}
    if not isinstance(raw, dict):
        p.add(path, f"expected a mapping with at least 'fixture', got {raw!r}")
        return TurnSpec(fixture="")
    s.check_keys(raw, ("fixture", "pause_ms", "barge_in_after_ms", "manual_commit", "expect", "say", "voice", "rate",
                       "id", "goto", "branches"), path, p)
    from .tts.spec import parse_say

    say = parse_say(raw, path, speech, p)
    fixture = s.get_str(raw, "fixture", path, p)
    if not fixture and say is None and "say" not in raw:
        p.add(s.join(path, "fixture"), "required: a fixture id from audio_fixtures/manifest.yaml (or say: \"the "
                                       "words\" to synthesise them)")
    e = s.get_dict(raw, "expect", path, p)
    epath = s.join(path, "expect")
    s.check_keys(e, ("transcript_contains", "response_contains", "max_first_audio_ms", "max_vad_ms", "max_wer",
                     "reason", "tool", "args", "args_match"), epath, p)

    def strings(key: str) -> list[str]:
        v = e.get(key)
        if v is None:
            return []
        if isinstance(v, str):
            return [v]
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return v
        p.add(s.join(epath, key), "expected a string or a list of strings")
        return []

    from .records import REASONS

    expect = Expectations(transcript_contains=strings("transcript_contains"),
                          response_contains=strings("response_contains"),
                          max_first_audio_ms=s.get_float(e, "max_first_audio_ms", epath, p, lo=1),
                          max_vad_ms=s.get_float(e, "max_vad_ms", epath, p, lo=1),
                          max_wer=s.get_float(e, "max_wer", epath, p, lo=0, hi=10),
                          reason=s.get_str(e, "reason", epath, p, choices=REASONS))
    from .tools import parse_expect

    expect.tool = parse_expect(e, epath, p, tool_names)
    spec = TurnSpec(fixture=fixture or "", pause_ms=s.get_int(raw, "pause_ms", path, p, 600, lo=0, hi=600_000) or 0,
                    barge_in_after_ms=s.get_int(raw, "barge_in_after_ms", path, p, None, lo=0, hi=60_000),
                    manual_commit=s.get_bool(raw, "manual_commit", path, p, False), expect=expect, say=say)
    from .branching import parse_links

    parse_links(spec, raw, path, p, lambda r, q: parse_turn(r, q, p, tool_names, speech))
    return spec


def check_expectations_can_pass(conversation: list[TurnSpec], session: dict[str, Any], targets: list[TargetSpec],
                                 p: s.Problems) -> None:
    """Refuse expectations that no run could ever meet: a gate that always fails is a typo, not a test."""
    for i, t in enumerate(conversation):
        if t.expect.transcript_contains and not _transcribes(session, targets):
            p.add(f"conversation[{i}].expect.transcript_contains", "can never pass: input transcription is off "
                  "(set session.input_audio_transcription, e.g. {model: azure-speech}; realtime models and the "
                  "embedded simulator start without it)")
        if t.expect.reason == "cancelled":
            nxt = conversation[i + 1] if i + 1 < len(conversation) else None
            if nxt is None or nxt.barge_in_after_ms is None:
                p.add(f"conversation[{i}].expect.reason", "can never pass: 'cancelled' needs the next turn to "
                      "interrupt this one (conversation[" + str(i + 1) + "].barge_in_after_ms), and "
                      + ("there is no next turn" if nxt is None else "it has none"))


def _transcribes(session: dict[str, Any], targets: list[TargetSpec]) -> bool:
    """Whether input transcripts will arrive: configured explicitly, or on by default for every target
    (cascaded models and agents; realtime models and the embedded simulator start with it off)."""
    if "input_audio_transcription" in session:
        return session["input_audio_transcription"] is not None
    from .protocol.session import is_realtime_model

    return bool(targets) and all(
        not t.embedded and t.target is not None and (t.target.agent is not None or not is_realtime_model(t.target.model))
        for t in targets)


def check_fixtures(conversation: list[TurnSpec], fixtures_dir: str, file: str, p: s.Problems,
                    paths: list[str] | None = None) -> None:
    from .fixtures import FixtureError, library

    try:
        manifest = library(fixtures_dir)
    except FixtureError as exc:
        p.add("fixtures_dir", str(exc))
        return
    for i, turn in enumerate(conversation):
        if turn.fixture and turn.fixture not in manifest:
            known = ", ".join(sorted(manifest)[:8])
            where = paths[i] if paths else f"conversation[{i}]"
            p.add(f"{where}.fixture", f"unknown fixture {turn.fixture!r} (known: {known}, ...)")
