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

    @property
    def error_ms(self) -> float:
        return self.harness_ms - self.truth_ms


def compare(turns: Iterable[dict[str, Any]], truth: Iterable[dict[str, Any]]) -> list[Comparison]:
    by_response = {t["response_id"]: t for t in truth if t.get("response_id") and t.get("first_audio_sent_mono_ns")}
    out: list[Comparison] = []
    for rec in turns:
        t = by_response.get(rec.get("response_id"))
        if t is None or rec.get("first_audio_ms") is None or rec.get("speech_end_audio_ms") is None:
            continue
        if t.get("speech_end_recv_mono_ns") is None or t.get("speech_end_audio_ms") is None:
            continue
        raw = (t["first_audio_sent_mono_ns"] - t["speech_end_recv_mono_ns"]) / 1e6
        shift = rec["speech_end_audio_ms"] - t["speech_end_audio_ms"]
        out.append(Comparison(rec["response_id"], rec["first_audio_ms"], raw - shift))
    return out


def compare_files(turns_jsonl: str | os.PathLike[str], truth_jsonl: str | os.PathLike[str]) -> list[Comparison]:
    return compare(read_records(turns_jsonl), read_records(truth_jsonl))
