"""Turn records: the one data contract between the engine, Locust, the report and CI gates.

A record is flat and JSON-friendly so that it can be appended to ``turns.jsonl`` the moment a turn
ends, shipped to a Locust master as a plain dict, and loaded into pandas without reshaping.
Definitions of every latency live in docs/metrics.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

#: The closed set of turn outcomes. ``complete`` is the only success.
REASONS = (
    "complete",
    "no_speech_detected",  # server never reported speech_started/stopped for the utterance
    "no_response",  # speech was detected but no response.created arrived
    "no_audio",  # a response finished without a single audio delta
    "cancelled",  # response.done status=cancelled (barge-in or client cancel)
    "failed",  # response.done status=failed
    "incomplete",  # response.done status=incomplete (max tokens, content filter)
    "timeout",  # the response started but never finished within the turn timeout
    "disconnected",  # the socket closed during the turn
    "error",  # the server sent an error event for this turn
    "tool_timeout",  # the agent called a tool and the round trip (result -> answer) never completed
)

#: A turn still in flight when the load generator stopped (stop-timeout expired): recorded, but not a
#: measurement (``valid=false``); the verdict does not count it as generator overload.
STOP_ABORTED = "aborted by load generator stop"



def ended_as_expected(complete: bool, expectations: Iterable[dict[str, Any]] | None) -> bool:
    """A turn that completed, or ended with the outcome its scenario expected (``expect: {reason: cancelled}``
    on a barge-in's interrupted turn): not a failure (docs/metrics.md "Completeness")."""
    return bool(complete) or any(isinstance(e, dict) and e.get("name") == "reason" and e.get("ok")
                                 for e in expectations or ())


#: Session outcomes (sessions.jsonl). Handshake rejections are counted here, never as turn failures.
SESSION_OUTCOMES = ("ok", "rejected", "connect_error", "disconnected", "error", "aborted")


@dataclass(slots=True)
class TurnRecord:
    """One user turn, measured from the caller's side. Latencies are milliseconds or None."""

    run_id: str = ""
    scenario: str = ""
    target: str = ""
    worker: str = ""
    session_id: str = ""  # harness-side id (unique per run)
    server_session_id: str = ""  # from session.created
    turn_index: int = 0
    fixture: str = ""
    turn_id: str = ""  # the scenario turn's id (harness/branching.py): which line of the script this was
    kind: str = "vad"  # vad | manual | barge_in
    # When: wall clock (epoch seconds) of the true end of user speech, and load at that moment.
    t_speech_end: float = 0.0
    speech_end_audio_ms: float | None = None  # the same instant on the server's input-buffer timeline
    active_sessions: int = 0
    # Latencies, all from the true end of user speech (fixture speech_end_ms on the send clock).
    first_audio_ms: float | None = None
    first_voiced_ms: float | None = None
    leading_silence_ms: float | None = None
    vad_ms: float | None = None
    server_response_ms: float | None = None  # speech_stopped -> first audio delta
    first_transcript_ms: float | None = None  # -> first input transcription event
    response_created_ms: float | None = None
    response_audio_ms: float | None = None  # duration of audio received
    response_wall_ms: float | None = None  # first audio delta -> response.done
    audio_rtf: float | None = None  # response_audio_ms / response_wall_ms (>1 = faster than real time)
    playback_underruns: int = 0
    underrun_ms: float = 0.0
    cancel_ms: float | None = None  # barge-in speech start -> response cancelled / audio stopped
    audio_bytes: int = 0
    # Content.
    input_transcript: str | None = None
    wer: float | None = None
    response_transcript: str | None = None
    response_id: str = ""
    response_status: str = ""
    expectations: list[dict[str, Any]] = field(default_factory=list)  # {name, ok, detail}
    expectations_ok: bool = True
    # Tool calls (docs/metrics.md "Tool calls"): empty / None on turns where the agent called none.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {kind,name,call_id,arguments,exec_ms,ok,...}
    first_tool_call_ms: float | None = None  # true end of speech -> first call's arguments done (MCP: its start)
    tool_exec_ms: float | None = None  # longest executor run of the turn (caller-side function calls)
    answer_first_audio_ms: float | None = None  # tool result in (answer requested) -> first audio after it
    filler_audio_ms: float | None = None  # audio heard before the tool result (interim responses)
    expected_tool: str = ""  # expect.tool of the turn ("": no tool expectation; "none": no call expected)
    # Event marks for the waterfall: ms relative to the true end of user speech (negative = before).
    # Keys: utterance_start, speech_end(=0), speech_started, speech_stopped, committed,
    # transcript, response_created, first_audio, first_voiced, last_audio, response_done, barge_in.
    marks: dict[str, float] = field(default_factory=dict)
    # Outcome.
    complete: bool = False
    reason: str = "incomplete"
    error: str = ""
    # Self-check of the generator.
    pacing_late_p99_ms: float | None = None
    pacing_late_max_ms: float | None = None
    generator_lag_ms: float | None = None
    valid: bool = True
    # Quotas (harness/quota.py): a turn the service throttled (throttled_tokens, throttled_connections,
    # capacity) or cut at the maximum session length (session_expired) is not a failure of the agent;
    # reports count it apart from completeness.
    throttle: str = ""
    # Caller variant (scenario variants:, harness/tts): its label and fields; "" / {} without variants.
    variant: str = ""
    variant_fields: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TurnRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class SessionRecord:
    """One synthetic caller session: lets counts reconcile (sessions started = session records)."""

    run_id: str = ""
    scenario: str = ""
    target: str = ""
    worker: str = ""
    session_id: str = ""
    server_session_id: str = ""
    t_start: float = 0.0  # epoch seconds
    t_end: float = 0.0
    outcome: str = "ok"  # one of SESSION_OUTCOMES
    http_status: int | None = None  # handshake status when rejected
    connect_attempts: int = 1
    backoff_ms: float = 0.0  # total time spent waiting on Retry-After / backoff
    connect_ms: float | None = None  # TCP+TLS+WebSocket handshake until session.created
    turns_attempted: int = 0
    turns_recorded: int = 0
    close_code: int | None = None
    error: str = ""
    pacing_late_p50_ms: float | None = None
    pacing_late_p99_ms: float | None = None
    pacing_late_max_ms: float | None = None
    frames_sent: int = 0
    # Quotas (harness/quota.py).
    budget_wait_ms: float = 0.0  # time spent waiting for the resource's connection budget (not failing)
    throttled: str = ""  # class of the last throttle (handshake 429 or turn): throttled_connections | throttled_tokens | capacity
    throttled_attempts: int = 0  # handshakes answered 429
    retry_after_s: float | None = None  # Retry-After of a throttled turn: the caller waits this long before its next session
    reconnects: int = 0  # new connections because of the maximum session length (planned or after an expiry)
    reconnect_gap_ms: list[float] = field(default_factory=list)  # old connection closed -> next session.updated, each
    #: why each reconnect happened (same order as reconnect_gap_ms): "planned" = between turns before a
    #: known expiry (client/expiry.py, no turn lost); "expired" = after the server ended the session
    reconnect_reasons: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)  # turn ids in the order spoken: the branches this caller took

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


#: Column order of turns.csv / the DataFrame.
COLUMNS = tuple(f.name for f in dataclasses.fields(TurnRecord))


class RecordWriter:
    """Append-only JSONL writer that flushes every record: a crash leaves every finished turn on disk."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self.count = 0

    def write(self, record: TurnRecord | SessionRecord | dict[str, Any]) -> None:
        data = record if isinstance(record, dict) else record.to_dict()
        line = json.dumps(data, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            self.count += 1

    def write_many(self, records: Iterable[TurnRecord | SessionRecord | dict[str, Any]]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield records from a JSONL file, skipping a torn last line left by a crash."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
