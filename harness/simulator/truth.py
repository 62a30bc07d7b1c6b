"""Ground truth: what the simulator really did and when, one JSON line per response.

The harness measures latency from the client side; this log is what it is checked against. Every
instant is stamped twice, ``time.monotonic_ns()`` (exact intervals within this process) and
``time.time_ns()`` (to line up with the harness's wall clock across processes). Send instants are
stamped by the writer immediately before the frame is written, never when it is scheduled.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

#: The instants of a response, in the order they happen. Each has ``<name>_mono_ns``/``_wall_ns``.
INSTANTS = ("speech_end_recv", "speech_stopped_sent", "response_created", "first_audio_sent",
            "last_audio_sent", "done_sent")


@dataclass(slots=True)
class TurnTruth:
    """One response of one session, filled in as it happens and written when it ends."""

    session_id: str = ""
    session_index: int = 0
    response_id: str | None = None
    item_id: str | None = None  # the user's input item (speech_started/committed item_id)
    output_item_id: str | None = None  # the assistant message item
    turn_index: int = 0
    trigger: str = "vad"  # vad | manual (commit + response.create) | response.create
    speech_start_audio_ms: int | None = None  # onset of speech on the buffer timeline (no padding)
    speech_end_audio_ms: int | None = None  # end of the last speech frame (no silence_duration)
    speech_end_recv_mono_ns: int | None = None
    speech_end_recv_wall_ns: int | None = None
    speech_end_recv_shared: bool = False  # that audio came in one read with later audio: its stamp may be late
    speech_stopped_sent_mono_ns: int | None = None
    speech_stopped_sent_wall_ns: int | None = None
    response_created_mono_ns: int | None = None
    response_created_wall_ns: int | None = None
    first_audio_sent_mono_ns: int | None = None
    first_audio_sent_wall_ns: int | None = None
    last_audio_sent_mono_ns: int | None = None
    last_audio_sent_wall_ns: int | None = None
    done_sent_mono_ns: int | None = None
    done_sent_wall_ns: int | None = None
    delay_anchor: str = "speech_stopped"
    injected_delay_ms: float | None = None  # first_audio_delay_ms drawn for this response
    created_delay_ms: float | None = None
    audio_pace: float | None = None
    chunk_ms: float | None = None
    reply_id: str | None = None
    audio_sent_ms: float = 0.0  # audio duration actually sent
    fault: str | None = None
    status: str = "in_progress"  # completed | cancelled | failed | incomplete | stalled | disconnected
    reason: str | None = None  # turn_detected | client_cancelled | ...
    first_audio_ms_truth: float | None = None  # (first_audio_sent - speech_end_recv) / 1e6
    kind: str = "response"  # "throttle" lines (quotas.throttle_record) share the log
    # Tool calls (harness/simulator/tools.py). On the calling response: what was called and when the
    # first call's arguments were complete (function/mcp) and the MCP/agent call ended (both sent).
    tool_kind: str | None = None  # function | mcp | agent
    tool_calls: list[dict[str, Any]] | None = None  # [{name, call_id, arguments}]
    tool_args_done_sent_mono_ns: int | None = None
    tool_args_done_sent_wall_ns: int | None = None
    tool_result_sent_mono_ns: int | None = None
    tool_result_sent_wall_ns: int | None = None
    tool_latency_ms: float | None = None  # injected MCP / agent action latency
    # On the answer (or interim filler) response: which calling response it follows, and when the
    # caller's response.create for it arrived (function calls; kernel arrival stamp).
    answer_to: str | None = None
    answer_request_recv_mono_ns: int | None = None
    answer_request_recv_shared: bool = False  # read together with a later message: the stamp may be late

    def stamp(self, instant: str) -> None:
        """Record ``instant`` now on both clocks (called by the writer right before a send)."""
        mono, wall = time.monotonic_ns(), time.time_ns()
        if instant == "audio":
            if self.first_audio_sent_mono_ns is None:
                self.first_audio_sent_mono_ns, self.first_audio_sent_wall_ns = mono, wall
            self.last_audio_sent_mono_ns, self.last_audio_sent_wall_ns = mono, wall
            return
        if instant == "tool_args_done_sent" and self.tool_args_done_sent_mono_ns is not None:
            return  # parallel calls: the first one's arguments are what the caller waits for
        setattr(self, f"{instant}_mono_ns", mono)
        setattr(self, f"{instant}_wall_ns", wall)

    def finish(self) -> dict[str, Any]:
        if self.first_audio_sent_mono_ns is not None and self.speech_end_recv_mono_ns is not None:
            self.first_audio_ms_truth = (self.first_audio_sent_mono_ns - self.speech_end_recv_mono_ns) / 1e6
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class TruthLog:
    """Append-only JSONL, flushed per line so a killed simulator leaves every finished response."""

    def __init__(self, path: str | os.PathLike[str] | None):
        self.path = Path(path) if path else None
        self._fh = None
        self._lock = threading.Lock()
        self.count = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")

    def write(self, truth: TurnTruth | dict[str, Any]) -> None:
        record = truth if isinstance(truth, dict) else truth.finish()
        if self._fh is None:
            self.count += 1
            return
        line = orjson.dumps(record) + b"\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            self.count += 1

    def close(self) -> None:
        with self._lock:
            if self._fh is not None and not self._fh.closed:
                self._fh.flush()
                self._fh.close()


def read_truth(path: str | os.PathLike[str], kind: str | None = "response") -> list[dict[str, Any]]:
    """Complete lines of a truth log of one ``kind`` (``response``, ``throttle``; None: all).

    A torn last line is skipped.
    """
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if kind is None or rec.get("kind", "response") == kind:
                out.append(rec)
    return out
