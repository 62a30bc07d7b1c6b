"""How right is the stopwatch? Join turn records with the simulator's ground-truth log.

The simulator knows when it *received* the audio at its VAD's speech end and when it *sent* the
first audio delta. Its VAD may place the speech end a frame away from the fixture's true bound, so
the truth is shifted along the audio timeline by (harness speech_end_audio_ms − simulator
speech_end_audio_ms): under real-time streaming one ms of audio is one ms of time. What remains,
harness − truth, is the harness's own measurement error (send/receive stamping, loopback delivery).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

from .records import read_records


@dataclass
class Comparison:
    response_id: str
    harness_ms: float
    truth_ms: float
    metric: str = "first_audio_ms"  # compare_tools: first_tool_call_ms | tool_call_after_speech_stopped_ms | answer_...

    @property
    def error_ms(self) -> float:
        return self.harness_ms - self.truth_ms


def compare(turns: Iterable[dict[str, Any]], truth: Iterable[dict[str, Any]]) -> list[Comparison]:
    """first_audio_ms against the truth, per turn that has both.

    A turn whose speech-end audio the simulator read together with later audio
    (``speech_end_recv_shared``: its loop was behind, and a read's kernel stamp is its last
    segment's) has no exact truth: its stamp is a frame or more late, so it is left out rather than
    reported as a harness error; :func:`inexact_truth` counts them (the bench reports it).
    """
    by_response = {t["response_id"]: t for t in truth if t.get("response_id") and t.get("first_audio_sent_mono_ns")}
    out: list[Comparison] = []
    for rec in turns:
        t = by_response.get(rec.get("response_id"))
        if not comparable(rec, t):
            continue
        raw = (t["first_audio_sent_mono_ns"] - t["speech_end_recv_mono_ns"]) / 1e6
        shift = rec["speech_end_audio_ms"] - t["speech_end_audio_ms"]
        out.append(Comparison(rec["response_id"], rec["first_audio_ms"], raw - shift))
    return out


def comparable(rec: dict[str, Any], t: dict[str, Any] | None) -> bool:
    """The rule :func:`compare` (and the bench's error split) judge a turn by: both ends measured its
    speech end and first audio, and the truth's speech-end stamp is exact (not a shared read)."""
    return (t is not None and rec.get("first_audio_ms") is not None and rec.get("speech_end_audio_ms") is not None
            and t.get("speech_end_recv_mono_ns") is not None and t.get("speech_end_audio_ms") is not None
            and not t.get("speech_end_recv_shared"))


def inexact_truth(turns: Iterable[dict[str, Any]], truth: Iterable[dict[str, Any]]) -> int:
    """How many of ``turns`` :func:`compare` left out for a late (shared-read) speech-end stamp."""
    shared = {t["response_id"] for t in truth if t.get("response_id") and t.get("speech_end_recv_shared")}
    return sum(1 for rec in turns if rec.get("response_id") in shared and rec.get("first_audio_ms") is not None)


def compare_files(turns_jsonl: str | os.PathLike[str], truth_jsonl: str | os.PathLike[str]) -> list[Comparison]:
    return compare(read_records(turns_jsonl), read_records(truth_jsonl))


def compare_tools(turns: Iterable[dict[str, Any]], truth: Iterable[dict[str, Any]]) -> list[Comparison]:
    """Tool metrics against the simulator's tool instants (harness/simulator/tools.py).

    A tool turn's record carries the answer's response id; the answer's truth names the calling
    response (``answer_to``). first_tool_call_ms is checked like first audio (speech end received →
    first call's arguments sent, shifted along the audio timeline); answer_first_audio_ms against the
    answer's first audio sent after the caller's ``response.create`` arrived (function calls) or after
    ``mcp_call.completed`` was sent (MCP, agent actions). Where the simulator's receive stamp is not
    exact (the message came in one read with later ones, so it carries the later one's stamp: the
    simulator was behind), there is no exact truth and the pair is left out.
    """
    by_id = {t["response_id"]: t for t in truth if t.get("response_id")}
    out: list[Comparison] = []
    for rec in turns:
        answer = by_id.get(rec.get("response_id"))
        calling = by_id.get(answer.get("answer_to")) if answer else None
        if calling is None:
            continue
        rid = rec["response_id"]
        if rec.get("first_tool_call_ms") is not None and calling.get("tool_args_done_sent_mono_ns") and \
                calling.get("speech_end_recv_mono_ns") and rec.get("speech_end_audio_ms") is not None and \
                not calling.get("speech_end_recv_shared"):  # a late simulator read: no exact truth to compare
            raw = (calling["tool_args_done_sent_mono_ns"] - calling["speech_end_recv_mono_ns"]) / 1e6
            shift = rec["speech_end_audio_ms"] - calling["speech_end_audio_ms"]
            out.append(Comparison(rid, rec["first_tool_call_ms"], raw - shift, "first_tool_call_ms"))
        # The same event measured from speech_stopped (both ends stamp server events): no VAD shift, so
        # it isolates how the tool event itself was stamped, even on turns whose pacing was late.
        stopped = (rec.get("marks") or {}).get("speech_stopped")
        if rec.get("first_tool_call_ms") is not None and stopped is not None and \
                calling.get("tool_args_done_sent_mono_ns") and calling.get("speech_stopped_sent_mono_ns"):
            out.append(Comparison(rid, rec["first_tool_call_ms"] - stopped,
                                  (calling["tool_args_done_sent_mono_ns"] - calling["speech_stopped_sent_mono_ns"]) / 1e6,
                                  "tool_call_after_speech_stopped_ms"))
        ref = answer.get("answer_request_recv_mono_ns") or calling.get("tool_result_sent_mono_ns")
        if rec.get("answer_first_audio_ms") is not None and ref and answer.get("first_audio_sent_mono_ns") and \
                not answer.get("answer_request_recv_shared"):
            out.append(Comparison(rid, rec["answer_first_audio_ms"], (answer["first_audio_sent_mono_ns"] - ref) / 1e6,
                                  "answer_first_audio_ms"))
    return out
