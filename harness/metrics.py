"""Turn timeline -> TurnRecord. Pure functions; every definition is written down in docs/metrics.md.

All latencies start at the *true* end of user speech: the fixture's ``speech_end_ms`` placed on the
instant its frame actually left the socket. Never the server's VAD events, never the start of the turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from . import tool_metrics
from .records import TurnRecord
from .timeline import TurnTimeline

NS = 1_000_000


@dataclass
class TurnContext:
    """What the record needs besides the timeline: static per session, or per turn."""

    bytes_per_ms: float  # of the output audio format
    expect_audio: bool = True  # False for text-only modality
    expectations: Any = None  # scenario.Expectations
    interrupted: TurnTimeline | None = None  # the turn this one barged into
    pacing_lateness_ms: list[float] = field(default_factory=list)
    loop_lag_ms: float = 0.0
    max_lag_ms: float = 10.0
    common: dict[str, Any] = field(default_factory=dict)  # run_id, scenario, target, session ids, worker...
    active_sessions: int = 0
    wall_minus_mono_ns: int = 0


def build_turn_record(turn: TurnTimeline, ctx: TurnContext) -> TurnRecord:
    end = turn.speech_end_ns or None
    rec = TurnRecord(**ctx.common)
    rec.turn_index, rec.fixture, rec.kind = turn.index, turn.fixture, turn.kind
    rec.t_speech_end = ((end or turn.utterance_start_ns) + ctx.wall_minus_mono_ns) / 1e9
    rec.active_sessions = ctx.active_sessions
    rec.speech_end_audio_ms = round(turn.speech_end_audio_ms, 3) if turn.speech_end_ns else None
    rec.response_id = turn.response_id or ""
    rec.response_status = turn.status or ""
    rec.audio_bytes = turn.audio_bytes

    first_audio = turn.first_audio_ns
    rec.first_audio_ms = _ms(first_audio, end)
    rec.vad_ms = _ms(turn.speech_stopped_ns, end)
    rec.server_response_ms = _ms(first_audio, turn.speech_stopped_ns)
    rec.first_transcript_ms = _ms(turn.transcript_first_ns, end)
    rec.response_created_ms = _ms(turn.response_created_ns, end)
    if turn.deltas:
        audio_ms = turn.audio_bytes / ctx.bytes_per_ms
        rec.response_audio_ms = round(audio_ms, 3)
        if turn.response_done_ns is not None and first_audio is not None:
            rec.response_wall_ms = _ms(turn.response_done_ns, first_audio)
            if rec.response_wall_ms:
                rec.audio_rtf = round(audio_ms / rec.response_wall_ms, 4)
        play = playback(turn.deltas, ctx.bytes_per_ms, turn.voiced_offset_bytes)
        rec.playback_underruns, rec.underrun_ms = play.underruns, round(play.underrun_ms, 3)
        if play.voiced_at_ns is not None:
            rec.first_voiced_ms = _ms(play.voiced_at_ns, end)
            rec.leading_silence_ms = round(turn.voiced_offset_bytes / ctx.bytes_per_ms, 3)
    if ctx.interrupted is not None and turn.speech_start_ns:
        prev = ctx.interrupted
        stop = prev.response_done_ns if prev.status == "cancelled" else None
        if stop is None and prev.deltas and prev.status in (None, "cancelled"):
            stop = prev.deltas[-1][0]
        rec.cancel_ms = _ms(stop, turn.speech_start_ns)

    rec.input_transcript = turn.transcript
    rec.wer = word_error_rate(turn.text, turn.transcript) if turn.transcript is not None and turn.text else None
    rec.response_transcript = "".join(turn.response_transcript) or None
    rec.reason = classify(turn, ctx.expect_audio)
    rec.complete = rec.reason == "complete"
    rec.error = "; ".join(msg for _, msg in turn.errors)[:500] or (turn.close_detail if rec.reason == "disconnected" else "")
    rec.marks = marks(turn)
    tool_metrics.fill(rec, turn, ctx.bytes_per_ms, getattr(ctx.expectations, "tool", None))

    lat = ctx.pacing_lateness_ms
    if lat:
        srt = sorted(lat)
        rec.pacing_late_p99_ms = round(srt[min(len(srt) - 1, int(0.99 * len(srt)))], 3)
        rec.pacing_late_max_ms = round(srt[-1], 3)
    rec.generator_lag_ms = round(max(rec.pacing_late_max_ms or 0.0, ctx.loop_lag_ms), 3)
    rec.valid = rec.generator_lag_ms <= ctx.max_lag_ms
    if ctx.expectations is not None:
        rec.expectations = evaluate_expectations(rec, ctx.expectations)
        rec.expectations_ok = all(e["ok"] for e in rec.expectations)
    return rec


def classify(turn: TurnTimeline, expect_audio: bool = True) -> str:
    """One reason from the closed set (records.REASONS); order matters and is documented."""
    if turn.tool_pending:
        return "disconnected" if turn.closed_ns is not None else "tool_timeout"
    if turn.response_done_ns is not None:
        status = turn.status or "unknown"
        if status == "completed":
            if expect_audio and not turn.deltas:
                return "no_audio"
            return "complete"
        if status in ("cancelled", "failed", "incomplete"):
            return status
        return "failed"
    if turn.errors:
        return "error"
    if turn.closed_ns is not None:
        return "disconnected"
    if turn.response_id is not None or turn.deltas:
        return "timeout"
    if turn.speech_detected:
        return "no_response"
    return "no_speech_detected"


@dataclass
class Playback:
    underruns: int
    underrun_ms: float
    voiced_at_ns: int | None


def playback(deltas: list[tuple[int, int]], bytes_per_ms: float, voiced_offset: int | None) -> Playback:
    """A player that starts at the first delta and plays in real time, stalling when it runs dry."""
    if not deltas:
        return Playback(0, 0.0, None)
    start = deltas[0][0]
    buffered_until = start  # ns at which the audio received so far will have been played
    underruns, stall_ns = 0, 0
    played_bytes = 0
    voiced_at = None
    for t, n in deltas:
        if t > buffered_until:
            if played_bytes:
                underruns += 1
                stall_ns += t - buffered_until
            buffered_until = t
        if voiced_at is None and voiced_offset is not None and played_bytes + n > voiced_offset:
            voiced_at = buffered_until + int((voiced_offset - played_bytes) / bytes_per_ms * NS)
        buffered_until += int(n / bytes_per_ms * NS)
        played_bytes += n
    return Playback(underruns, stall_ns / NS, voiced_at)


def marks(turn: TurnTimeline) -> dict[str, float]:
    ref = turn.speech_end_ns or turn.utterance_start_ns
    points = {
        "utterance_start": turn.utterance_start_ns or None, "speech_start": turn.speech_start_ns or None,
        "speech_end": turn.speech_end_ns or None, "commit_sent": turn.commit_sent_ns,
        "speech_started": turn.speech_started_ns, "speech_stopped": turn.speech_stopped_ns,
        "committed": turn.committed_ns, "transcript": turn.transcript_first_ns,
        "response_created": turn.response_created_ns, "first_audio": turn.first_audio_ns,
        "last_audio": turn.deltas[-1][0] if turn.deltas else None, "response_done": turn.response_done_ns,
        "closed": turn.closed_ns,
    }
    return {k: round((v - ref) / NS, 3) for k, v in points.items() if v is not None and ref}


def evaluate_expectations(rec: TurnRecord, exp: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, ok: bool, detail: str) -> None:
        out.append({"name": name, "ok": bool(ok), "detail": detail})

    for needle in exp.transcript_contains:
        hay = rec.input_transcript or ""
        add(f"transcript_contains:{needle}", needle.lower() in hay.lower(), f"transcript={hay[:120]!r}")
    for needle in exp.response_contains:
        hay = rec.response_transcript or ""
        add(f"response_contains:{needle}", needle.lower() in hay.lower(), f"response={hay[:120]!r}")
    for name, limit, actual in (("max_first_audio_ms", exp.max_first_audio_ms, rec.first_audio_ms),
                                ("max_vad_ms", exp.max_vad_ms, rec.vad_ms), ("max_wer", exp.max_wer, rec.wer)):
        if limit is not None:
            add(name, actual is not None and actual <= limit, f"actual={actual} limit={limit}")
    if getattr(exp, "tool", None) is not None:
        ok, detail = tool_metrics.evaluate(rec, exp.tool)
        add(f"tool:{exp.tool.tool}", ok, detail)
    expected_reason = exp.reason or None
    if expected_reason:
        add("reason", rec.reason == expected_reason, f"actual={rec.reason} expected={expected_reason}")
    return out


_WORD = re.compile(r"[\w']+", re.UNICODE)


def word_error_rate(reference: str, hypothesis: str | None) -> float:
    """Word-level Levenshtein distance / reference words, on lower-cased words without punctuation."""
    ref = _WORD.findall(reference.lower())
    hyp = _WORD.findall((hypothesis or "").lower())
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return round(prev[-1] / len(ref), 4)


def _ms(t: int | None, ref: int | None) -> float | None:
    if t is None or ref is None:
        return None
    return round((t - ref) / NS, 3)
