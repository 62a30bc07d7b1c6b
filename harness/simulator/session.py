"""One connection's protocol state machine, sans I/O: client events in, actions out.

``receive(data, recv_mono_ns, recv_wall_ns)`` and timer callbacks return lists of actions (send,
send junk, timer, close, record truth); the server executes them in order, tests execute them with
a fake clock. Everything random is drawn from ``rng_for(seed, session_index, n, purpose)``, so two
runs with the same seed and the same audio make the same choices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..limits import INPUT_AUDIO_TOKENS_PER_S
from ..protocol import events as ev
from ..protocol import session as ps
from ..vad import VadEvent
from .actions import NS_PER_MS, Action, Close, Record, Send, Timer
from .conversation import Conversation
from .profiles import Profile, rng_for
from .cascade import HeldUserItem, recognised
from .quotas import (SESSION_EXPIRED, ResourceQuota, announced_expiry, expired_error, session_lifetime_ns,
                     throttle_record)
from .reply_bank import ReplyBank
from .responder import ActiveResponse
from .responses import MIN_COMMIT_MS, Responses
from .tools import SimTools
from .transcribe import Transcriber, recognise_action, transcription_actions
from .truth import TurnTruth
from .vad_stream import InputAudio, SpeechEvent, vad_params

APPEND_PREFIX = ev.append_message_prefix()
_PREFIX_LEN = len(APPEND_PREFIX)
CLIENT_EVENTS = (ev.SESSION_UPDATE, ev.INPUT_AUDIO_APPEND, ev.INPUT_AUDIO_COMMIT, ev.INPUT_AUDIO_CLEAR,
                 ev.ITEM_CREATE, ev.ITEM_TRUNCATE, ev.ITEM_DELETE, ev.ITEM_RETRIEVE, ev.RESPONSE_CREATE,
                 ev.RESPONSE_CANCEL)


@dataclass
class SimStats:
    """Counters shared by every session of one simulator (single event loop: no locking)."""

    messages_in: int = 0
    appends: int = 0
    audio_in_ms: float = 0.0
    turns_committed: int = 0
    responses: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    errors_sent: int = 0


@dataclass
class SessionSetup:
    """Per-connection facts from the handshake plus the simulator-wide shared objects."""

    api_version: str
    model: str | None
    agent: dict[str, Any] | None
    session_index: int
    seed: int
    profile: Profile
    bank: ReplyBank
    transcriber: Transcriber
    stats: SimStats = field(default_factory=SimStats)
    quota: ResourceQuota | None = None  # the resource's counters (one per simulator); None: a private one
    defer_vad: bool = False  # leave due VAD batches to the server's loop pass (vad_pass.py) instead


@dataclass
class _Speech:
    item_id: str
    audio_start_ms: int  # onset - prefix padding (what speech_started reports)
    onset_ms: int


class SimSession(Responses):
    def __init__(self, setup: SessionSetup, now_wall_ns: int) -> None:
        self.s = setup
        self.profile = setup.profile
        self.quota = setup.quota if setup.quota is not None else ResourceQuota(self.profile.quotas)
        order = self.profile.event_order
        self.cascaded = order == "cascaded" or (order == "auto" and ps.is_cascaded(setup.model, setup.agent is not None))
        self.user_item: HeldUserItem | None = None  # cascaded order: the last committed user item
        self.config = ps.default_session(setup.api_version, model=setup.model, agent=setup.agent,
                                         expires_at=announced_expiry(now_wall_ns, self.profile.session_limit_s))
        # The session ends at the instant it announced (whole unix seconds); without the field (older
        # api-versions) at the configured limit after session.created.
        self.lifetime_ns = session_lifetime_ns(self.config.get("expires_at"), now_wall_ns,
                                               self.profile.session_limit_s)
        self.id: str = self.config["id"]
        self.conversation_id = ev.new_id("conv")
        self.input = InputAudio(ps.input_format_of(self.config), vad_params(self.config["turn_detection"]),
                                self.profile.vad_batch_ms, keep_audio=self.config["input_audio_transcription"] is not None)
        self.conv = Conversation(self._error)
        self.tools = SimTools(self)
        self.reply_override: tuple[Any, float] | None = None  # set by tools: the next response says this
        self.input.keep_audio = self.input.keep_audio or self.tools.needs_audio(self.config)
        self.input.defer = setup.defer_vad
        self.response: ActiveResponse | None = None
        self.speech: _Speech | None = None
        self.last_speech: tuple[int, int] | None = None  # (onset, end) of the last run, manual mode
        self.pending: TurnTruth | None = None  # committed user turn not answered yet
        self.deferred: TurnTruth | None = None  # VAD turn waiting for the current response to end
        self.turn_index = -1
        self.response_seq = 0
        self.closed = False

    # --- entry points ----------------------------------------------------------------------------
    def start(self, now_ns: int) -> list[Action]:
        out: list[Action] = [Send(ev.server_event(ev.SESSION_CREATED, session=self.config))]
        if self.lifetime_ns is not None:
            out.append(Timer(now_ns + self.lifetime_ns, self._expire))
        return out

    def catch_up(self) -> list[Action]:
        """Decide now the VAD batches taken for the server's loop pass (``defer_vad``): before anything
        but a plain append (a message, a timer) reaches this session, so its actions keep the
        per-session order; appends only queue more audio behind them and emit nothing themselves."""
        if not self.input.due or self.closed:
            return []
        out: list[Action] = []
        vad = self.input.vad
        for frames, due_ns, position, arrivals in self.input.take_due():
            out += self.decided([] if frames is None else vad.classify(frames), due_ns, position, arrivals)
        return out

    def decided(self, events: list[VadEvent], due_ns: int, position_ms: float, arrivals: int) -> list[Action]:
        """The actions of a taken batch's VAD events, exactly as when decided on the spot: as of the
        append that completed it (``due_ns``), the buffer position and the arrivals known then."""
        inp = self.input
        speech = inp.classified(events, position_ms)
        if not speech:
            return []
        inp.arrivals_seen = arrivals
        try:
            return self.speech_actions(speech, due_ns)
        finally:
            inp.arrivals_seen = None

    def speech_actions(self, speech: list[SpeechEvent], recv_ns: int) -> list[Action]:
        """What VAD decisions do, ``recv_ns`` being the arrival of the append that completed their batch."""
        out: list[Action] = []
        for sev in speech:
            out += self._on_speech(sev, recv_ns)
        return out

    def receive(self, data: str | bytes, recv_ns: int, recv_wall_ns: int) -> list[Action]:
        if self.closed:
            return []
        self.s.stats.messages_in += 1
        if self.tools.watch is not None:  # was the caller's response.create read together with this?
            self.tools.seen(recv_ns)
        if isinstance(data, str):
            data = data.encode()
        # Hot path: the harness's own append frames (~15k/s at 300 sessions) skip the JSON parser.
        end = len(data) - 2
        if data.startswith(APPEND_PREFIX) and data.endswith(b'"}') and data.find(b'"', _PREFIX_LEN, end) < 0:
            return self._append_b64(memoryview(data)[_PREFIX_LEN:end], None, recv_ns, recv_wall_ns)
        if self.input.due:  # VAD batches still wait for the loop pass: their decisions come first
            return self.catch_up() + self._event(data, recv_ns, recv_wall_ns)
        return self._event(data, recv_ns, recv_wall_ns)

    def _event(self, data: bytes, recv_ns: int, recv_wall_ns: int) -> list[Action]:
        try:
            event = ev.parse(data)
        except ev.ProtocolError as exc:
            return self._error(f"Invalid event: {exc}", "invalid_json", None, None)
        etype = event["type"]
        eid = event.get("event_id")
        if etype == ev.INPUT_AUDIO_APPEND:
            return self._append(event, recv_ns, recv_wall_ns)
        handler = _HANDLERS.get(etype)
        if handler is None:
            supported = ", ".join(f"'{t}'" for t in CLIENT_EVENTS)
            return self._error(f"Invalid value: '{etype}'. Supported values are: {supported}.", "invalid_value", "type", eid)
        return handler(self, event, recv_ns)

    def connection_lost(self) -> list[Action]:
        self.closed = True
        r, self.response = self.response, None
        if r is None:
            return []
        out = r.abandon()
        if out:
            self._on_end(r, 0)
        return out

    # --- helpers ---------------------------------------------------------------------------------
    def _error(self, message: str, code: str | None, param: str | None, event_id: str | None,
               error_type: str = "invalid_request_error") -> list[Action]:
        self.s.stats.errors_sent += 1
        return [Send(ev.error_event(message, code=code, param=param, error_type=error_type, event_id=event_id))]

    @property
    def vad_mode(self) -> bool:
        return self.config["turn_detection"] is not None

    def _td(self, key: str, default: Any) -> Any:
        td = self.config["turn_detection"] or {}
        return td.get(key, default)

    def _expire(self, now_ns: int) -> list[Action]:
        limit = self.profile.session_limit_s or 0.0
        self.s.stats.errors_sent += 1
        self.quota.note(SESSION_EXPIRED)
        out: list[Action] = [Send(expired_error(limit)),
                             Record(throttle_record(SESSION_EXPIRED, now_ns, time.time_ns(), session_id=self.id,
                                                   session_index=self.s.session_index, limit_s=limit))]
        out += self.connection_lost()
        return out + [Close(1001, "session expired")]

    # --- session.update --------------------------------------------------------------------------
    def _session_update(self, event: dict[str, Any], now_ns: int) -> list[Action]:
        update = event.get("session")
        eid = event.get("event_id")
        if not isinstance(update, dict):
            return self._error("Missing required parameter: 'session'.", "missing_required_parameter", "session", eid)
        merged, issues = ps.merge_session(self.config, update, api_version=self.s.api_version)
        errors = [i for i in issues if not i.warning]
        if errors:
            i = errors[0]
            return self._error(i.message, i.code, f"session.{i.param}" if i.param else "session", eid)
        old, self.config = self.config, merged
        fmt = ps.input_format_of(merged)
        if fmt != self.input.fmt or old["turn_detection"] != merged["turn_detection"]:
            self.input.configure(fmt, vad_params(merged["turn_detection"]))
            self.speech = None
        self.input.keep_audio = merged["input_audio_transcription"] is not None or self.tools.needs_audio(merged)
        return [Send(ev.server_event(ev.SESSION_UPDATED, session=merged))] + [
            Send(ev.server_event(ev.WARNING, warning={"code": w.code, "message": w.message, "param": f"session.{w.param}"}))
            for w in issues] + self.tools.on_session_update(old, merged, now_ns)

    # --- input audio -----------------------------------------------------------------------------
    def _append(self, event: dict[str, Any], recv_ns: int, recv_wall_ns: int) -> list[Action]:
        b64 = event.get("audio")
        if not isinstance(b64, str):
            return self._error("Missing required parameter: 'audio'.", "missing_required_parameter", "audio",
                               event.get("event_id"))
        return self._append_b64(b64, event.get("event_id"), recv_ns, recv_wall_ns)

    def _append_b64(self, b64: str | bytes | memoryview, event_id: str | None, recv_ns: int, recv_wall_ns: int) -> list[Action]:
        stats = self.s.stats
        stats.appends += 1
        before = self.input.position_ms
        try:
            speech = self.input.append(b64, recv_ns, recv_wall_ns)
        except ValueError as exc:  # after any decisions still due (they come from earlier appends)
            return self.catch_up() + self._error(f"Invalid 'audio': {exc}", "invalid_value", "audio", event_id)
        got_ms = self.input.position_ms - before
        stats.audio_in_ms += got_ms
        # Every second of audio received costs input tokens on the resource's meter, an open mic's
        # silence too (the service listens to all of it); response.done.usage reports the turn's own.
        self.quota.spend(got_ms * INPUT_AUDIO_TOKENS_PER_S / 1000.0, recv_ns)
        return self.speech_actions(speech, recv_ns) if speech else []

    def _on_speech(self, sev: SpeechEvent, now_ns: int) -> list[Action]:
        if sev.kind == "started":
            self.speech = _Speech(ev.new_id("item"), sev.audio_ms, sev.speech_ms)
            if not self.vad_mode:
                return []
            out: list[Action] = [Send(ev.server_event(ev.SPEECH_STARTED, audio_start_ms=sev.audio_ms,
                                                      item_id=self.speech.item_id))]
            r = self.response
            if r is not None and r.active and self._td("interrupt_response", True):
                out += self._barge_in(r, now_ns)
            return out
        run, self.speech = self.speech, None
        if run is None:
            return []
        if not self.vad_mode:
            self.last_speech = (run.onset_ms, sev.speech_ms)
            return []
        truth = self._truth("vad", run.item_id, run.onset_ms, sev.speech_ms)
        out = [Send(ev.server_event(ev.SPEECH_STOPPED, audio_end_ms=sev.audio_ms, item_id=run.item_id),
                    truth, "speech_stopped_sent")]
        self.input.commit(sev.audio_ms)
        out += self._commit_turn(run.item_id, run.audio_start_ms, sev.speech_ms, truth, now_ns)
        if not self._td("create_response", True):
            self.pending = truth
        elif self.response is not None and self.response.active:
            self.deferred = truth  # interrupt_response false: answer once the current response ends
        else:
            out += self._start_response(truth, now_ns, {})
        return out

    def _barge_in(self, r: ActiveResponse, now_ns: int) -> list[Action]:
        out = r.cancel("turn_detected", now_ns)
        if self._td("auto_truncate", False) and r.audio:
            first = r.truth.first_audio_sent_mono_ns
            played = 0.0 if first is None else min(r.audio_sent_ms, max(0.0, (now_ns - first) / NS_PER_MS))
            self.conv.set_audio(r.ctx.item_id, played)
            out.append(Send(ev.server_event(ev.ITEM_TRUNCATED, item_id=r.ctx.item_id, content_index=0,
                                            audio_end_ms=int(played))))
        return out

    def _truth(self, trigger: str, item_id: str | None, onset_ms: int | None, end_ms: int | None) -> TurnTruth:
        t = TurnTruth(session_id=self.id, session_index=self.s.session_index, item_id=item_id, trigger=trigger,
                      speech_start_audio_ms=onset_ms, speech_end_audio_ms=end_ms, turn_index=self.turn_index)
        if end_ms is not None:
            t.speech_end_recv_mono_ns, t.speech_end_recv_wall_ns = self.input.recv_instant(end_ms)
            t.speech_end_recv_shared = self.input.recv_shared(end_ms)
        return t

    def _commit_turn(self, item_id: str, seg_start_ms: float, speech_end_ms: float, truth: TurnTruth,
                     now_ns: int) -> list[Action]:
        """committed + conversation.item.created (+ transcription later) for a user audio turn."""
        self.turn_index += 1
        truth.turn_index = self.turn_index
        self.s.stats.turns_committed += 1
        prev = self.conv.add(item_id, "user")
        item = ev.message_item(item_id, "user", [{"type": "input_audio", "transcript": None}])
        created = ev.server_event(ev.ITEM_CREATED, previous_item_id=prev, item=item)
        out: list[Action] = [Send(ev.server_event(ev.COMMITTED, previous_item_id=prev, item_id=item_id))]
        self._input_tokens = max(0, int((speech_end_ms - seg_start_ms) / 1000.0 * INPUT_AUDIO_TOKENS_PER_S))
        transcription = self.config["input_audio_transcription"]
        if not self.cascaded:
            out.append(Send(created))
            return out + (self._transcribe(item_id, seg_start_ms, speech_end_ms, now_ns) if transcription else [])
        u = self.user_item = HeldUserItem(
            item_id, created, transcribe=transcription is not None, alive=lambda: not self.closed,
            deltas=0 if (transcription or {}).get("model") == "azure-speech" else self.profile.transcription.deltas,
            text=None if transcription else "")
        return out + (self._transcribe(item_id, seg_start_ms, speech_end_ms, now_ns, u) if transcription else u.emit())

    def _flush_user_item(self, u: HeldUserItem, now_ns: int) -> list[Action]:
        out = u.emit()
        r = self.response
        if out and r is not None:
            out += r.release(now_ns)
        return out

    def _transcribe(self, item_id: str, start_ms: float, end_ms: float, now_ns: int,
                    held: HeldUserItem | None = None) -> list[Action]:
        """Realtime order: deltas and completed on their own timers; cascaded: fills ``held`` instead."""
        rng = rng_for(self.s.seed, self.s.session_index, self.turn_index, "transcription")
        delay_ns = int(self.profile.transcription_delay_ms.sample(rng) * NS_PER_MS)
        samples, rate = self.input.segment(start_ms, end_ms), self.input.fmt.sample_rate
        if held is None:
            return transcription_actions(self.s.transcriber, samples, rate, rng, self.profile.transcription, item_id,
                                         now_ns, delay_ns, lambda: not self.closed)
        held.due_ns = now_ns + delay_ns
        return [recognise_action(self.s.transcriber, samples, rate, rng, self.profile.transcription,
                                 recognised(held, self._flush_user_item,
                                            lambda: self.response is not None and self.response.blocked))]

    def _commit(self, event: dict[str, Any], now_ns: int) -> list[Action]:
        out: list[Action] = []
        for sev in self.input.flush():
            out += self._on_speech(sev, now_ns)
        if self.input.uncommitted_ms < MIN_COMMIT_MS:
            return out + self._error(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {self.input.uncommitted_ms:.2f}ms of audio.",
                "input_audio_buffer_commit_empty", None, event.get("event_id"))
        return out + self._manual_commit(now_ns)

    def _manual_commit(self, now_ns: int) -> list[Action]:
        start, end = self.input.buffer_start_ms, self.input.position_ms
        run, self.speech = self.speech, None
        onset, speech_end = None, None
        if run is not None:  # still speaking: the speech runs to the end of the buffer
            onset, speech_end = run.onset_ms, int(end)
        elif self.last_speech and self.last_speech[1] >= start:
            onset, speech_end = self.last_speech
        item_id = run.item_id if run else ev.new_id("item")
        truth = self._truth("manual", item_id, onset, speech_end)
        self.input.commit()
        self.input.restart_vad()
        self.last_speech = None
        self.pending = truth
        return self._commit_turn(item_id, start, end, truth, now_ns)

    def _clear(self, event: dict[str, Any], now_ns: int) -> list[Action]:
        self.input.clear()
        self.speech = None
        return [Send(ev.server_event(ev.CLEARED))]


_HANDLERS = {
    ev.SESSION_UPDATE: SimSession._session_update,
    ev.INPUT_AUDIO_COMMIT: SimSession._commit,
    ev.INPUT_AUDIO_CLEAR: SimSession._clear,
    ev.RESPONSE_CREATE: SimSession._response_create,
    ev.RESPONSE_CANCEL: SimSession._response_cancel,
    ev.ITEM_CREATE: lambda self, e, now: self.tools.on_item(e, now) or self._item_create(e, now),
    ev.ITEM_TRUNCATE: lambda self, e, now: self.conv.truncate(e, now),
    ev.ITEM_DELETE: lambda self, e, now: self.conv.delete(e, now),
    ev.ITEM_RETRIEVE: lambda self, e, now: self.conv.retrieve(e, now),
}
