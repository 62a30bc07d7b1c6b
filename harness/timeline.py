"""Stamped events of one session, routed to the user turn they belong to. Pure: no I/O, no clock.

Routing rules (docs/metrics.md): user-side events follow their ``item_id``; ``response.created`` goes
to the latest turn whose speech the server has detected (or committed); every later response event
follows its ``response_id``, so in-flight deltas of a cancelled response never leak into the turn that
interrupted it. Anything that cannot be placed is kept on the session, never raised.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Callable

from . import tool_timeline as tooltl
from .protocol import events as ev

# Events that carry a response_id at top level or inside "response".
_RESPONSE_EVENTS = frozenset({
    ev.RESPONSE_DONE, ev.OUTPUT_ITEM_ADDED, ev.OUTPUT_ITEM_DONE, ev.CONTENT_PART_ADDED, ev.CONTENT_PART_DONE,
    ev.AUDIO_DELTA, ev.AUDIO_DONE, ev.AUDIO_TRANSCRIPT_DELTA, ev.AUDIO_TRANSCRIPT_DONE, ev.TEXT_DELTA,
    ev.TEXT_DONE, "response.function_call_arguments.delta", "response.function_call_arguments.done",
    "response.audio_timestamp.delta", "response.audio_timestamp.done", "response.animation_viseme.delta",
    "response.animation_viseme.done"}) | tooltl.RESPONSE_TOOL_EVENTS
_USER_EVENTS = frozenset({ev.SPEECH_STARTED, ev.SPEECH_STOPPED, ev.COMMITTED, ev.TRANSCRIPTION_DELTA,
                          ev.TRANSCRIPTION_COMPLETED, ev.TRANSCRIPTION_FAILED})

#: Returns the byte offset of the first voiced sample in decoded audio, or None (injected: keeps numpy out).
VoicedFinder = Callable[[bytes], "int | None"]


@dataclass
class TurnTimeline:
    """Everything the caller saw of one turn; instants are monotonic ns, None when never seen."""

    index: int
    fixture: str
    text: str = ""
    kind: str = "vad"
    # Filled by the mic (true instants from the fixture's speech bounds and the frames' send times).
    utterance_start_ns: int = 0
    speech_start_ns: int = 0
    speech_end_ns: int = 0
    speech_end_audio_ms: float = 0.0
    commit_sent_ns: int | None = None
    # Server side, as stamped on arrival.
    item_ids: list[str] = field(default_factory=list)
    speech_started_ns: int | None = None
    speech_stopped_ns: int | None = None
    committed_ns: int | None = None
    transcript_first_ns: int | None = None
    transcript: str | None = None
    transcript_failed: bool = False
    response_id: str | None = None
    superseded: list[str] = field(default_factory=list)  # earlier responses replaced by a later one
    response_created_ns: int | None = None
    output_item_id: str | None = None  # the assistant item (truncated after a barge-in)
    deltas: list[tuple[int, int]] = field(default_factory=list)  # (arrival ns, decoded bytes)
    voiced_offset_bytes: int | None = None  # first non-silent byte within the response audio
    _voiced_scanned: int = 0
    text_first_ns: int | None = None
    response_transcript: list[str] = field(default_factory=list)
    response_done_ns: int | None = None
    status: str | None = None
    status_reason: str | None = None
    errors: list[tuple[int, str]] = field(default_factory=list)  # (ns, "code: message")
    closed_ns: int | None = None
    close_detail: str = ""
    events: list[tuple[int, str, int]] = field(default_factory=list)  # (ns, type, payload bytes)
    finished_ns: int | None = None  # set by the session when the record is built
    interrupted: "TurnTimeline | None" = None  # the turn this one barged into
    utterance: Any = None  # the client's mic handle (pacing lateness), opaque here
    tools: tooltl.ToolState | None = None  # tool calls of this turn (None: the agent called none)

    @property
    def tool_pending(self) -> bool:
        """A tool round trip is open: the turn is not over even though a response is done."""
        return self.tools is not None and self.tools.pending(self.response_id, self.response_done_ns is not None)

    @property
    def speech_detected(self) -> bool:
        return self.speech_started_ns is not None or self.committed_ns is not None

    @property
    def first_audio_ns(self) -> int | None:
        return self.deltas[0][0] if self.deltas else None

    @property
    def audio_bytes(self) -> int:
        return sum(n for _, n in self.deltas)

    @property
    def response_finished(self) -> bool:
        return self.response_done_ns is not None


@dataclass
class SessionTimeline:
    """Routes events; ``on_turn_event(turn, type)`` lets the I/O layer wake waiters without polling."""

    voiced: VoicedFinder | None = None
    on_turn_event: Callable[[TurnTimeline, str], None] | None = None
    keep_events: bool = True
    turns: list[TurnTimeline] = field(default_factory=list)
    by_item: dict[str, TurnTimeline] = field(default_factory=dict)
    by_response: dict[str, TurnTimeline] = field(default_factory=dict)
    session_events: list[tuple[int, str, int]] = field(default_factory=list)
    unrouted: int = 0
    server_session: dict[str, Any] | None = None
    session_errors: list[tuple[int, str]] = field(default_factory=list)
    closed_ns: int | None = None
    close_detail: str = ""

    def add_turn(self, turn: TurnTimeline) -> TurnTimeline:
        self.turns.append(turn)
        return turn

    # -- routing --------------------------------------------------------------------------------
    def route(self, event: dict[str, Any], t: int, size: int = 0) -> TurnTimeline | None:
        """Place one parsed server event. Never raises on odd input: odd events are counted."""
        etype = event.get("type")
        if not isinstance(etype, str):
            self.unrouted += 1
            return None
        turn = self._owner(event, etype, t)
        if turn is None:
            self.session_events.append((t, etype, size))
            self._session_level(event, etype, t)
            return None
        if self.keep_events:
            turn.events.append((t, etype, size))
        self._apply(turn, event, etype, t)
        if self.on_turn_event is not None:
            self.on_turn_event(turn, etype)
        return turn

    def close(self, t: int, detail: str = "") -> None:
        """The socket is gone: every unfinished turn ends now."""
        self.closed_ns, self.close_detail = t, detail
        for turn in self.turns:
            if turn.finished_ns is None and turn.closed_ns is None:
                turn.closed_ns, turn.close_detail = t, detail
                if self.on_turn_event is not None:
                    self.on_turn_event(turn, "closed")

    def _owner(self, event: dict[str, Any], etype: str, t: int) -> TurnTimeline | None:
        if etype in _USER_EVENTS:
            item = _str(event.get("item_id"))
            if item and item in self.by_item:
                return self.by_item[item]
            turn = self._speaking(t)
            if turn is not None and item:
                turn.item_ids.append(item)
                self.by_item[item] = turn
            return turn
        if etype == ev.RESPONSE_CREATED:
            resp = event.get("response")
            rid = _str(resp.get("id")) if isinstance(resp, dict) else None
            turn = self._awaiting_response(t)
            if turn is not None and rid:
                self.by_response[rid] = turn
            return turn
        if etype in _RESPONSE_EVENTS:
            rid = _str(event.get("response_id"))
            if rid is None:
                resp = event.get("response")
                rid = _str(resp.get("id")) if isinstance(resp, dict) else None
            return self.by_response.get(rid) if rid else None
        if etype == ev.ERROR:
            return self._speaking(t)
        if etype in tooltl.ITEM_TOOL_EVENTS:
            item = _str(event.get("item_id"))
            return self.by_item.get(item) if item else None
        if etype == ev.ITEM_CREATED:
            item = event.get("item")
            iid = _str(item.get("id")) if isinstance(item, dict) else None
            return self.by_item.get(iid) if iid else None
        return None

    def _speaking(self, t: int) -> TurnTimeline | None:
        """The latest turn whose utterance has started by ``t`` and is not finished."""
        for turn in reversed(self.turns):
            if turn.utterance_start_ns and turn.utterance_start_ns <= t and turn.finished_ns is None:
                return turn
        return None

    def _awaiting_response(self, t: int) -> TurnTimeline | None:
        for turn in reversed(self.turns):
            if turn.finished_ns is None and turn.utterance_start_ns and turn.utterance_start_ns <= t and (
                    turn.speech_detected or turn.commit_sent_ns is not None):
                return turn
        return self._speaking(t)

    # -- state updates ----------------------------------------------------------------------------
    def _apply(self, turn: TurnTimeline, event: dict[str, Any], etype: str, t: int) -> None:
        if etype == ev.SPEECH_STARTED:
            turn.speech_started_ns = turn.speech_started_ns or t
        elif etype == ev.SPEECH_STOPPED:
            turn.speech_stopped_ns = t  # the last stop before the response is the one that counts
        elif etype == ev.COMMITTED:
            turn.committed_ns = turn.committed_ns or t
        elif etype in (ev.TRANSCRIPTION_DELTA, ev.TRANSCRIPTION_COMPLETED):
            turn.transcript_first_ns = turn.transcript_first_ns or t
            if etype == ev.TRANSCRIPTION_COMPLETED and isinstance(event.get("transcript"), str):
                turn.transcript = event["transcript"] if turn.transcript is None else f"{turn.transcript} {event['transcript']}"
        elif etype == ev.TRANSCRIPTION_FAILED:
            turn.transcript_failed = True
        elif etype == ev.RESPONSE_CREATED:
            rid = _str((event.get("response") or {}).get("id")) if isinstance(event.get("response"), dict) else None
            if turn.tools is not None and turn.tools.calls and rid != turn.response_id:
                # A tool turn continues across responses (call, filler, answer): keep what was heard.
                turn.tools.on_response_created(rid, t)
                turn.response_done_ns = turn.status = turn.status_reason = None
                if turn.response_transcript and not turn.response_transcript[-1].endswith(" "):
                    turn.response_transcript.append(" ")
            elif turn.response_id and rid and rid != turn.response_id:
                turn.superseded.append(turn.response_id)
                turn.deltas.clear()
                turn.voiced_offset_bytes, turn._voiced_scanned = None, 0
                turn.response_transcript.clear()
                turn.response_done_ns = turn.status = turn.status_reason = None
            turn.response_id = rid or turn.response_id
            turn.response_created_ns = t
        elif not _is_current(turn, event):
            return  # a superseded response's stragglers: kept in events, ignored by metrics
        elif etype == ev.OUTPUT_ITEM_ADDED:
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") in tooltl.CALL_ITEM_TYPES:
                self._tool_event(turn, event, etype, t)
                if _str(item.get("id")):
                    self.by_item[item["id"]] = turn  # mcp_call status events carry only item_id
            elif isinstance(item, dict) and turn.output_item_id is None:
                turn.output_item_id = _str(item.get("id"))
        elif etype in tooltl.RESPONSE_TOOL_EVENTS or etype in tooltl.ITEM_TOOL_EVENTS:
            self._tool_event(turn, event, etype, t)
        elif etype == ev.AUDIO_DELTA:
            self._audio(turn, event.get("delta"), t)
            if turn.tools is not None:
                turn.tools.on_audio(event.get("response_id"), t)
        elif etype in (ev.AUDIO_TRANSCRIPT_DELTA, ev.TEXT_DELTA):
            d = event.get("delta")
            if isinstance(d, str):
                turn.response_transcript.append(d)
            if etype == ev.TEXT_DELTA:
                turn.text_first_ns = turn.text_first_ns or t
        elif etype == ev.RESPONSE_DONE:
            resp = event.get("response") if isinstance(event.get("response"), dict) else {}
            turn.response_done_ns = t
            turn.status = _str(resp.get("status")) or "unknown"
            if turn.tools is not None and turn.status != "completed" and turn.response_id in turn.tools.calling:
                turn.tools.cut.append(turn.response_id)  # a cut calling response: its calls are not answered
            details = resp.get("status_details")
            if isinstance(details, dict):
                turn.status_reason = _str(details.get("reason")) or _error_text(details.get("error"))
        elif etype == ev.ERROR:
            turn.errors.append((t, _error_text(event.get("error")) or "error"))

    def _tool_event(self, turn: TurnTimeline, event: dict[str, Any], etype: str, t: int) -> None:
        if turn.tools is None:
            turn.tools = tooltl.ToolState()
        tooltl.apply(turn.tools, event, etype, t, turn.response_id)

    def _audio(self, turn: TurnTimeline, delta: Any, t: int) -> None:
        if not isinstance(delta, str):
            return
        n = ev.base64_decoded_len(delta)
        turn.deltas.append((t, n))
        # Decode only until the first non-silent sample is found: later deltas are length arithmetic.
        if self.voiced is not None and turn.voiced_offset_bytes is None:
            try:
                pcm = base64.b64decode(delta, validate=False)
            except (binascii.Error, ValueError):
                return
            i = self.voiced(pcm)
            if i is not None:
                turn.voiced_offset_bytes = turn._voiced_scanned + i
            turn._voiced_scanned += n

    def _session_level(self, event: dict[str, Any], etype: str, t: int) -> None:
        if etype in (ev.SESSION_CREATED, ev.SESSION_UPDATED) and isinstance(event.get("session"), dict):
            self.server_session = event["session"]
        elif etype == ev.ERROR:
            self.session_errors.append((t, _error_text(event.get("error")) or "error"))


def _is_current(turn: TurnTimeline, event: dict[str, Any]) -> bool:
    rid = event.get("response_id")
    if rid is None and isinstance(event.get("response"), dict):
        rid = event["response"].get("id")
    return rid is None or rid == turn.response_id or event.get("type") == ev.ERROR


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _error_text(err: Any) -> str | None:
    if isinstance(err, dict):
        code, msg = err.get("code"), err.get("message")
        return f"{code}: {msg}" if code else (str(msg) if msg is not None else None)
    return str(err) if err else None
