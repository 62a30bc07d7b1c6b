"""One synthetic caller: connect, configure, speak each turn in real time, and record what came back.

The caller behaves like a real client: the microphone stays open between utterances, barge-in
speaks over the agent at a set offset from its first audio, manual turns commit and ask for a
response. Every turn that was started ends in exactly one TurnRecord, whatever the server does.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import gevent
import gevent.event

from .. import audio, auth, fixtures
from ..limits import UNLIMITED, Limits
from ..quota import classify_throttle, is_session_expiry, retry_after_from_text
from ..metrics import TurnContext, build_turn_record
from ..protocol import events as ev
from ..records import STOP_ABORTED, SessionRecord, TurnRecord
from ..branching import next_turn, turn_limit
from ..scenario import Scenario, TurnSpec
from ..timeline import SessionTimeline, TurnTimeline
from .pacer import LAG, Mic, Utterance
from .recording import Recorder
from .tools import ToolRunner, session_with_tools
from ..tts.prepare import fixture_for, variant_for
from .transport import ConnectError, Transport, WALL_MINUS_MONO_NS, connect

NS = 1_000_000
MAX_CONNECT_ATTEMPTS = 4
MAX_RETRY_AFTER_S = 30.0
# Diagnostic event logs are capped: a server flooding events (or errors) must not grow memory without bound.
MAX_SESSION_EVENTS = 1000
MAX_TURN_EVENTS = 2000
MAX_SESSION_ERRORS = 100
BUDGET_ABORT = "stopped while waiting for connection budget"  # the run ended before this caller's turn came
NOISE_VARIANTS = 8  # distinct noise realisations shared by all sessions (memory stays per-fixture, not per-session)


@dataclass
class Endpoint:
    """A connectable target. ``url``/``headers`` are called at every connect so tokens stay fresh."""

    name: str
    url: Callable[[], str]
    headers: Callable[[], dict[str, str]]
    display: str  # redacted, safe for logs and records
    open_timeout_s: float = 30.0
    resource: str = ""  # quotas belong to a resource (quota.resource_key); "" = this endpoint alone
    limits: Limits = UNLIMITED  # the resource's quotas (target.limits over the host's defaults)
    ssl_context: Any = None  # wss:// trust (tlsconf.client_context); None: the system store


def _closed_send(data: bytes) -> None:
    raise ConnectionError("session ended")


def _ignore_message(payload: bytes, t: int, binary: bool) -> None:
    pass


def _noop() -> None:
    pass


@dataclass
class SessionOptions:
    run_id: str = ""
    worker: str = ""
    session_id: str = ""
    seed: int = 0
    kernel_stamps: bool = True  # kernel arrival stamps on plain ws:// (harness/kstamp.py)
    on_record: Callable[[TurnRecord], None] = lambda r: None
    active_sessions: Callable[[], int] = lambda: 0
    stopping: Callable[[], bool] = lambda: False
    sleep: Callable[[float], None] = gevent.sleep
    extra_common: dict[str, Any] = field(default_factory=dict)
    recording_dir: str | None = None  # where sampled sessions write <session_id>.wav
    #: Called before every connection attempt with the endpoint: returns a slot of the resource's
    #: connection budget (``.done()`` once the handshake ended, ``.waited_s``), or None when the run
    #: stopped while waiting. None here: connect at once (no quota known).
    connect_gate: Callable[[Endpoint], Any] | None = None


_MESSAGES: dict[int, tuple[Any, tuple[bytes, ...]]] = {}


def _messages(frames: tuple[str, ...]) -> tuple[bytes, ...]:
    """Whole append messages built once per shared frame set; the hot path only sends bytes."""
    hit = _MESSAGES.get(id(frames))
    if hit is None or hit[0] is not frames:
        hit = (frames, tuple(ev.append_message(f) for f in frames))
        _MESSAGES[id(frames)] = hit
    return hit[1]


class CallerSession:
    def __init__(self, scenario: Scenario, endpoint: Endpoint, options: SessionOptions):
        self.sc = scenario
        self.ep = endpoint
        self.opt = options
        self.rng = random.Random(options.seed)
        s = scenario.session
        self.in_fmt = audio.input_format(s.get("input_audio_format", "pcm16"), s.get("input_audio_sampling_rate"))
        self.out_fmt = audio.output_format(s.get("output_audio_format", "pcm16"))
        self.expect_audio = "audio" in (s.get("modalities") or ["text", "audio"])
        self.timeline = SessionTimeline(voiced=self._voiced, on_turn_event=self._on_turn_event)
        self.timeline.session_events = deque(maxlen=MAX_SESSION_EVENTS)  # type: ignore[assignment]
        self.timeline.session_errors = deque(maxlen=MAX_SESSION_ERRORS)  # type: ignore[assignment]
        self.transport: Transport | None = None
        self.mic: Mic | None = None
        self.variant = variant_for(scenario, options.seed)  # this caller's voice/noise/line (harness/tts)
        self.changed = gevent.event.Event()
        self.record = SessionRecord(run_id=options.run_id, scenario=scenario.name, target=endpoint.name,
                                    worker=options.worker, session_id=options.session_id)
        self.records: list[TurnRecord] = []
        self._emitted = 0
        self._spoken: list[TurnSpec] = []  # the scenario turn behind each spoken turn (branches may repeat one)
        self._created: dict[str, Any] | None = None
        self._updated = gevent.event.AsyncResult()
        self._update_event_id = ""
        self.malformed = 0
        self._cut = ""  # set while a reconnect ends the turns the expired connection cut short
        self._errors_seen = self._turns_seen = 0  # what belongs to earlier connections of this session
        self.recorder: Recorder | None = None
        self.tools: ToolRunner | None = None
        if scenario.tools:
            self.tools = ToolRunner(scenario.tools, self._send, options.seed, options.sleep, self.changed.set)
        if options.recording_dir and self.rng.random() < scenario.audio.record_fraction:
            self.recorder = Recorder(self.in_fmt, self.out_fmt)

    # -- entry point ------------------------------------------------------------------------------
    def run(self) -> SessionRecord:
        rec = self.record
        rec.t_start = time.time()
        LAG.acquire()
        try:
            if self._connect() and self._configure():
                self._converse()
        except gevent.GreenletExit:
            rec.outcome, rec.error = "aborted", "stopped by the load generator"
            raise
        except Exception as exc:  # a bug or an odd server must not take the run down
            rec.outcome, rec.error = "error", f"{type(exc).__name__}: {exc}"[:500]
        finally:
            self._shutdown()
            LAG.release()
        return rec

    # -- connection -------------------------------------------------------------------------------
    def _connect(self) -> bool:
        rec = self.record
        t0 = time.monotonic_ns()
        for attempt in range(1, MAX_CONNECT_ATTEMPTS + 1):
            rec.connect_attempts = attempt
            slot = self.opt.connect_gate(self.ep) if self.opt.connect_gate is not None else None
            if self.opt.connect_gate is not None:
                if slot is None:  # the run stopped while this caller waited for connection budget
                    rec.outcome, rec.error = "aborted", BUDGET_ABORT
                    return False
                rec.budget_wait_ms = round(rec.budget_wait_ms + slot.waited_s * 1000, 3)
            try:
                self.transport = connect(self.ep.url(), self.ep.headers(), self._on_message,
                                         open_timeout=self.ep.open_timeout_s, kernel_stamps=self.opt.kernel_stamps,
                                         ssl_context=self.ep.ssl_context)
                break
            except ConnectError as exc:
                if slot is not None:
                    slot.done()  # before any backoff: the attempt is over
                rec.http_status, rec.error = exc.status, auth.diagnose(exc)[:500]
                if exc.status == 429:
                    rec.throttled = classify_throttle(429, exc.headers, exc.body, str(exc))
                    rec.throttled_attempts += 1
                retryable = exc.status in (429, 503) or exc.kind in ("timeout",)
                if not retryable or attempt == MAX_CONNECT_ATTEMPTS or self.opt.stopping():
                    rec.outcome = "rejected" if exc.status else "connect_error"
                    return False
                wait = exc.retry_after_s
                if wait is None:
                    wait = min(MAX_RETRY_AFTER_S, 0.5 * 2 ** attempt) * (0.5 + self.rng.random())
                wait = min(wait, MAX_RETRY_AFTER_S)
                rec.backoff_ms += wait * 1000
                self.opt.sleep(wait)
            finally:
                if slot is not None:
                    slot.done()
        if not self._wait(lambda: self._created is not None or self.timeline.closed_ns is not None,
                          time.monotonic_ns() + int(self.ep.open_timeout_s * 1e9)):
            rec.outcome, rec.error = "connect_error", "no session.created within the open timeout"
            return False
        if self._created is None:
            rec.outcome, rec.error = "disconnected", f"closed before session.created {self.timeline.close_detail}"
            return False
        rec.connect_ms = round((time.monotonic_ns() - t0) / NS - rec.backoff_ms - rec.budget_wait_ms, 3)
        rec.server_session_id = str(self._created.get("id", ""))
        rec.http_status, rec.error = None, ""
        return True

    def _configure(self) -> bool:
        self._update_event_id = ev.new_event_id()
        session = session_with_tools(self.sc.session, self.sc.tools, self.sc.mcp_tools)
        self._send(ev.dumps(ev.session_update(session, event_id=self._update_event_id)))
        ok = self._updated.wait(self.ep.open_timeout_s)
        if ok is None or ok is False:
            rec = self.record
            rec.outcome = "error" if ok is False else "disconnected" if self.timeline.closed_ns else "error"
            rec.error = rec.error or "no session.updated after session.update"
            return False
        cfg = self.timeline.server_session or {}
        if isinstance(cfg.get("output_audio_format"), str):
            try:
                self.out_fmt = audio.output_format(cfg["output_audio_format"])
            except ValueError:
                pass
        return True

    # -- the conversation ----------------------------------------------------------------------------
    def _start_mic(self) -> None:
        sc, a = self.sc, self.sc.audio
        silence = _messages(fixtures.silence_frames(self.in_fmt, a.chunk_ms, a.room_tone_dbfs, seed=0))
        prev = self.mic
        drop_rate = a.perturb.drop_rate
        if self.variant is not None and self.variant.drop_rate is not None:
            drop_rate = self.variant.drop_rate
        self.mic = Mic(self._send_recorded if self.recorder else self._send, silence, a.chunk_ms, open_mic=not sc.manual, drop_rate=drop_rate,
                       seed=self.opt.seed)
        if prev is not None:  # after a reconnect the session's pacing figures cover every connection
            self.mic.stats.merge(prev.stats)
            self.mic.frames_sent = prev.frames_sent
        self.mic.start()

    def _converse(self) -> None:
        sc, a = self.sc, self.sc.audio
        self._start_mic()
        timeout_ns = int(sc.load.turn_timeout_s * 1e9)
        step: int | None = 0 if sc.conversation else None  # which scenario turn; branches pick the next one
        for i in range(turn_limit(sc.conversation, sc.max_turns)):
            if step is None:  # the script (or a branch) ended the call
                break
            if self._expired() and not self.opt.stopping():  # an expiry error precedes its close: go now
                if not self._reconnect():
                    break
            if self.timeline.closed_ns is not None or self.mic.error is not None or self.opt.stopping():
                break
            spec = sc.conversation[step]
            prev = self.timeline.turns[-1] if self.timeline.turns else None
            if spec.barge_in_after_ms is not None and prev is not None:
                self._wait(lambda: prev.first_audio_ns is not None or self._turn_over(prev),
                           (prev.speech_end_ns or time.monotonic_ns()) + timeout_ns)
                if prev.first_audio_ns is not None:
                    self._sleep_until(prev.first_audio_ns + spec.barge_in_after_ms * NS)
            else:
                if prev is not None:
                    self._wait(lambda: self._turn_over(prev), (prev.speech_end_ns or time.monotonic_ns()) + timeout_ns)
                self._emit_ready(final=False)
                self._sleep_until(time.monotonic_ns() + spec.pause_ms * NS)
            self._spoken.append(spec)
            self.record.path.append(spec.id)
            self._speak(i, spec, fixture_for(sc, spec, self.variant),
                        prev if spec.barge_in_after_ms is not None else None)
            self._emit_ready(final=False)
            step = self._next_step(spec, timeout_ns)
        for turn in self.timeline.turns:
            self._wait(lambda: self._turn_over(turn), (turn.speech_end_ns or time.monotonic_ns()) + timeout_ns)
            self._emit_ready(final=False)
        if self.timeline.turns and self.timeline.turns[-1].speech_end_ns:
            self._sleep_until(self.timeline.turns[-1].speech_end_ns + a.trailing_silence_ms * NS)

    # -- the maximum session length (harness/quota.py) ---------------------------------------------------
    def _expired(self) -> bool:
        """The server closed because the session reached its maximum length (error session_expired)."""
        texts = [m for _, m in list(self.timeline.session_errors)[self._errors_seen:]]
        texts += [m for t in self.timeline.turns[self._turns_seen:] for _, m in t.errors]
        return any(is_session_expiry(x) for x in texts + [self.timeline.close_detail])

    def _reconnect(self) -> bool:
        """Open a new session and go on with the conversation where the expired one stopped (soaks)."""
        rec = self.record
        t_closed = self.timeline.closed_ns or time.monotonic_ns()
        self._cut = "session_expired"  # the turn the expiry cut short is the cap's doing, not the agent's
        self._emit_ready(final=True)
        self._cut = ""
        if self.mic is not None:
            self.mic.stop()
        if self.transport is not None:
            self.transport.close(1000)
            self.transport.on_message = _ignore_message
            self.transport = None
        self.timeline.closed_ns, self.timeline.close_detail = None, ""
        self._errors_seen, self._turns_seen = len(self.timeline.session_errors), len(self.timeline.turns)
        self._created, self._updated = None, gevent.event.AsyncResult()
        if not (self._connect() and self._configure()):
            return False
        rec.reconnects += 1
        rec.reconnect_gap_ms.append(round((time.monotonic_ns() - t_closed) / NS, 3))
        self._start_mic()
        return True

    def _next_step(self, spec: TurnSpec, timeout_ns: int) -> int | None:
        """The scenario turn to speak next: a branching turn waits for its response and reads it."""
        if not spec.branches:
            return spec.next
        turn = self.timeline.turns[-1]
        self._wait(lambda: self._turn_over(turn), (turn.speech_end_ns or time.monotonic_ns()) + timeout_ns)
        return next_turn(spec, "".join(turn.response_transcript))

    def _speak(self, i: int, spec: TurnSpec, fixture: Any, interrupted: TurnTimeline | None) -> None:
        a = self.sc.audio
        fs = fixtures.frames(fixture.id, self.in_fmt, a.chunk_ms, gain_db=a.perturb.gain_db,
                             snr_db=a.perturb.snr_db, seed=self.opt.seed % NOISE_VARIANTS,
                             directory=fixture.directory or self.sc.fixtures_dir)
        kind = "manual" if spec.manual_commit or self.sc.manual else ("barge_in" if spec.barge_in_after_ms is not None
                                                                       else "vad")
        utt = Utterance(frames=_messages(fs.frames), chunk_ms=a.chunk_ms, speech_start_ms=fs.speech_start_ms,
                        speech_end_ms=fs.speech_end_ms)
        turn = TurnTimeline(index=i, fixture=fixture.id, text=fixture.text, kind=kind, interrupted=interrupted,
                            utterance=utt, events=deque(maxlen=MAX_TURN_EVENTS))  # type: ignore[arg-type]
        self.record.turns_attempted += 1
        self.mic.play(utt)
        utt.started.wait(5.0)
        turn.utterance_start_ns = utt.start_ns or time.monotonic_ns()
        self.timeline.add_turn(turn)
        utt.done.wait(fs.duration_ms / 1000 + 5.0)
        turn.speech_start_ns, turn.speech_end_ns = utt.speech_start_ns, utt.speech_end_ns
        turn.speech_end_audio_ms = utt.speech_end_audio_ms
        if kind == "manual" and self.mic.error is None and self.timeline.closed_ns is None:
            try:
                self._send(ev.dumps(ev.input_audio_commit(ev.new_event_id())))
                turn.commit_sent_ns = time.monotonic_ns()
                self._send(ev.dumps(ev.response_create(event_id=ev.new_event_id())))
            except ConnectionError:
                pass

    def _turn_over(self, turn: TurnTimeline) -> bool:
        if turn.finished_ns is not None or turn.closed_ns is not None:
            return True
        if turn.tool_pending:
            return False
        if turn.response_done_ns is None:
            return bool(turn.errors) and turn.response_id is None and turn.speech_end_ns != 0
        if turn.status != "cancelled":
            return True
        # A response cancelled before the utterance even ended was a VAD split: wait for its successor.
        nxt = [t for t in self.timeline.turns if t.index > turn.index]
        return bool(nxt) or (turn.speech_end_ns != 0 and turn.response_done_ns >= turn.speech_end_ns)

    def _emit_ready(self, final: bool) -> None:
        turns = self.timeline.turns
        while self._emitted < len(turns):
            turn = turns[self._emitted]
            deadline = (turn.speech_end_ns or turn.utterance_start_ns) + int(self.sc.load.turn_timeout_s * 1e9)
            if not (final or self._turn_over(turn) or time.monotonic_ns() >= deadline):
                return
            self._finish(turn)
            self._emitted += 1

    def _finish(self, turn: TurnTimeline) -> None:
        turn.finished_ns = time.monotonic_ns()
        utt: Utterance | None = turn.utterance
        spec = self._spoken[turn.index]
        until = turn.first_audio_ns or turn.finished_ns
        ctx = TurnContext(bytes_per_ms=self.out_fmt.bytes_per_second / 1000, expect_audio=self.expect_audio,
                          expectations=spec.expect, interrupted=turn.interrupted,
                          pacing_lateness_ms=utt.lateness_ms if utt else [],
                          loop_lag_ms=LAG.max_lag_ms(turn.utterance_start_ns, until),
                          max_lag_ms=self.sc.load.max_pacing_lag_ms,
                          common={"run_id": self.opt.run_id, "scenario": self.sc.name, "target": self.ep.name,
                                  "worker": self.opt.worker, "session_id": self.opt.session_id,
                                  "server_session_id": self.record.server_session_id, **self.opt.extra_common},
                          active_sessions=self.opt.active_sessions(), wall_minus_mono_ns=WALL_MINUS_MONO_NS)
        rec = build_turn_record(turn, ctx)
        rec.turn_id = spec.id
        if self.variant is not None:
            rec.variant, rec.variant_fields = self.variant.label, self.variant.fields()
        if not rec.complete:  # a throttled turn is the quota's doing, not the agent's (harness/quota.py)
            closed = turn.closed_ns is not None or self.timeline.closed_ns is not None
            rec.throttle = classify_throttle(None, None, "", rec.error) or (
                "session_expired" if is_session_expiry(rec.error) or (closed and self._expired()) else "") or (
                self._cut if closed else "")
            if rec.throttle and rec.throttle != "session_expired":
                self.record.throttled = rec.throttle
                self._cut = self._cut or rec.throttle  # the close that follows a throttle cuts later turns too
                wait = retry_after_from_text(rec.error)
                self.record.retry_after_s = max(self.record.retry_after_s or 0.0, wait or 0.0) or None
        if self.opt.stopping() and not rec.complete:
            rec.valid = False
            rec.error = (rec.error + "; " if rec.error else "") + STOP_ABORTED
        self.records.append(rec)
        self.record.turns_recorded += 1
        self.opt.on_record(rec)
        turn.events.clear()  # bounded memory in long sessions

    # -- shutdown -----------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        rec = self.record
        if self.tools is not None:
            self.tools.stop()
        if self.mic is not None:
            self.mic.stop()
            st = self.mic.stats
            rec.frames_sent = self.mic.frames_sent
            rec.pacing_late_p50_ms, rec.pacing_late_p99_ms = st.percentile(50), st.percentile(99)
            rec.pacing_late_max_ms = round(st.max_ms, 3) if st.n else None
        closed_by_server = self.timeline.closed_ns is not None
        if self.transport is not None:
            self.transport.close(1000)
            info = self.transport.closed
            rec.close_code = info.code if info else None
            if closed_by_server and rec.outcome == "ok":
                rec.outcome = "disconnected"
                rec.error = rec.error or (info.error if info and info.error else f"server closed {rec.close_code}")
        errors = self.timeline.session_errors
        if errors and not rec.error:  # error events no turn owned (before the first turn, between turns)
            n = f"{len(errors)}+" if len(errors) == MAX_SESSION_ERRORS else str(len(errors))
            rec.error = f"{n} server error event(s) outside any turn; last: {errors[-1][1]}"[:500]
        if self.timeline.closed_ns is None:
            self.timeline.close(time.monotonic_ns(), "session ended")
        self._emit_ready(final=True)
        if self.recorder is not None:
            try:
                self.recorder.out_fmt = self.out_fmt
                self.recorder.write(f"{self.opt.recording_dir}/{self.opt.session_id}.wav")
            except Exception as exc:  # a recording must never cost the records
                rec.error = (rec.error + "; " if rec.error else "") + f"recording failed: {exc}"[:200]
        rec.t_end = time.time()
        self._unlink()

    def _unlink(self) -> None:
        """Drop the back-references (bound methods) that tie the mic, transport and timeline to this
        session, so an ended session is freed by reference counting: under ``realtime_gc``'s frozen
        heap, cycles would wait for a rare full collection. What runners read afterwards (the
        record, ``mic.stats``, ``transport.stamp_delays``/``closed``) stays."""
        if self.mic is not None:
            self.mic._send = _closed_send
        if self.transport is not None:
            self.transport.on_message = _ignore_message
        self.timeline.voiced = None
        self.timeline.on_turn_event = None
        if self.tools is not None:
            self.tools.send, self.tools.on_change = _closed_send, _noop

    # -- I/O callbacks (reader greenlet) -----------------------------------------------------------------
    def _on_message(self, payload: bytes, t: int, binary: bool) -> None:
        if not payload:
            info = self.transport.closed if self.transport else None
            detail = (info.error or f"close code {info.code}") if info else "closed"
            self.timeline.close(t, detail)
            if not self._updated.ready():
                self._updated.set(None)
            self.changed.set()
            return
        try:
            event = ev.parse(payload)
        except ev.ProtocolError:
            self.malformed += 1
            self.timeline.session_events.append((t, "binary" if binary else "malformed", len(payload)))
            return
        self.timeline.route(event, t, len(payload))
        etype = event["type"]
        if self.recorder is not None and etype == ev.AUDIO_DELTA and isinstance(event.get("delta"), str):
            self.recorder.on_delta(t, str(event.get("response_id")), event["delta"])
        if etype == ev.SESSION_CREATED:
            self._created = event.get("session") if isinstance(event.get("session"), dict) else {}
            self.changed.set()
        elif etype == ev.SESSION_UPDATED and not self._updated.ready():
            self._updated.set(True)
        elif etype == ev.ERROR and not self._updated.ready():
            err = event.get("error") if isinstance(event.get("error"), dict) else {}
            if err.get("event_id") in (None, self._update_event_id):
                self.record.error = f"session.update rejected: {err.get('code')}: {err.get('message')}"[:500]
                self._updated.set(False)

    def _on_turn_event(self, turn: TurnTimeline, etype: str) -> None:
        if self.tools is not None and turn.tools is not None:
            self.tools.on_event(turn, etype)
        if etype == ev.AUDIO_DELTA and len(turn.deltas) > 1:
            return  # only the first delta of a response wakes anyone up
        if etype == ev.RESPONSE_DONE and turn.status == "cancelled" and turn.output_item_id and turn.deltas:
            self._truncate(turn)
        self.changed.set()

    def _truncate(self, turn: TurnTimeline) -> None:
        """Tell the server how much of the interrupted answer the caller actually heard."""
        td = self.sc.session.get("turn_detection") or {}
        if isinstance(td, dict) and td.get("auto_truncate"):
            return
        heard_ms = (time.monotonic_ns() - turn.deltas[0][0]) / NS
        audio_ms = turn.audio_bytes / (self.out_fmt.bytes_per_second / 1000)
        try:
            self._send(ev.dumps(ev.item_truncate(turn.output_item_id, int(min(heard_ms, audio_ms)))))
        except ConnectionError:
            pass

    def _voiced(self, pcm: bytes) -> int | None:
        i = audio.first_voiced_sample(pcm, self.out_fmt)
        return None if i is None else i * (1 if self.out_fmt.codec in ("ulaw", "alaw") else 2)

    # -- helpers -------------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        if self.transport is None:
            raise ConnectionError("not connected")
        self.transport.send_text(data)

    def _send_recorded(self, data: bytes) -> None:
        self._send(data)
        self.recorder.on_sent(time.monotonic_ns(), data)

    def _wait(self, cond: Callable[[], bool], deadline_ns: int) -> bool:
        while not cond():
            remaining = (deadline_ns - time.monotonic_ns()) / 1e9
            if remaining <= 0:
                return False
            self.changed.clear()
            if cond():
                return True
            self.changed.wait(min(remaining, 0.5))
        return True

    def _sleep_until(self, t_ns: int) -> None:
        delay = (t_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            self.opt.sleep(delay)


def prepare(scenario: Scenario, seeds: range = range(NOISE_VARIANTS)) -> None:
    """Decode, perturb and encode every utterance the scenario speaks before load starts.

    Building frames is milliseconds of numpy work per fixture; done lazily inside the event loop it
    would make the first sessions' frames late. Perturbed frames depend on the session seed only when
    noise is added, so without ``snr_db`` one set serves every session.
    """
    s, a = scenario.session, scenario.audio
    fmt = audio.input_format(s.get("input_audio_format", "pcm16"), s.get("input_audio_sampling_rate"))
    _messages(fixtures.silence_frames(fmt, a.chunk_ms, a.room_tone_dbfs, seed=0))
    for seed in (seeds if a.perturb.snr_db is not None else range(1)):
        for turn in scenario.conversation:
            for variant in scenario.variants or [None]:
                fx = fixture_for(scenario, turn, variant)
                fs = fixtures.frames(fx.id, fmt, a.chunk_ms, gain_db=a.perturb.gain_db, snr_db=a.perturb.snr_db,
                                     seed=seed, directory=fx.directory or scenario.fixtures_dir)
                _messages(fs.frames)


def run_session(scenario: Scenario, endpoint: Endpoint, options: SessionOptions | None = None) -> list[TurnRecord]:
    """Run one caller session to the end and return its turn records (the simple public API)."""
    session = CallerSession(scenario, endpoint, options or SessionOptions())
    session.run()
    return session.records
