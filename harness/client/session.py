"""One synthetic caller: connect, configure, speak each turn in real time, and record what came back.

The caller behaves like a real client: the microphone stays open between utterances, barge-in
speaks over the agent at a set offset from its first audio, manual turns commit and ask for a
response. Every turn that was started ends in exactly one TurnRecord, whatever the server does.
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Any, Callable

import gevent
import gevent.event

from .. import fixtures, audio
from ..quota import classify_throttle, is_session_expiry, retry_after_from_text
from ..metrics import TurnContext, build_turn_record
from ..protocol import events as ev
from ..records import STOP_ABORTED, SessionRecord, TurnRecord
from ..branching import next_turn, turn_limit
from ..scenario import Scenario, TurnSpec
from ..timeline import SessionTimeline, TurnTimeline
from .connection import BUDGET_ABORT, MAX_CONNECT_ATTEMPTS, MAX_RETRY_AFTER_S, Connection, _ignore_message
from .messages import NOISE_VARIANTS, _messages, prepare
from .options import Endpoint, SessionOptions
from .pacer import LAG, Mic, Utterance
from .receive import Receiver
from .recording import Recorder
from .tools import ToolRunner
from ..tts.prepare import fixture_for, variant_for
from .transport import Transport, WALL_MINUS_MONO_NS

__all__ = ["BUDGET_ABORT", "MAX_CONNECT_ATTEMPTS", "MAX_RETRY_AFTER_S", "NOISE_VARIANTS", "CallerSession",
           "Endpoint", "SessionOptions", "prepare", "run_session"]  # the names callers import from here

NS = 1_000_000
# Diagnostic event logs are capped: a server flooding events (or errors) must not grow memory without bound.
MAX_SESSION_EVENTS = 1000
MAX_TURN_EVENTS = 2000
MAX_SESSION_ERRORS = 100


def _closed_send(data: bytes, block: bool = True) -> bool:
    raise ConnectionError("session ended")


def _noop() -> None:
    pass


class CallerSession(Connection, Receiver):
    """Connecting lives in connection.py, the receive path in receive.py; the conversation and its
    turn records here."""

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
        self._created_ns = 0  # when this connection's session.created arrived (monotonic)
        self._expiry_ns: int | None = None  # when this connection's session expires, if known (client/expiry.py)
        self._reply_s = 0.0  # the longest reply so far (speech end -> response.done): the next turn's estimate
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
            fixture = fixture_for(sc, spec, self.variant)
            fs = self._frames(fixture)
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
                if not self._renew_between_turns(fs.duration_ms):  # session expiry (client/expiry.py)
                    break
            self._spoken.append(spec)
            self.record.path.append(spec.id)
            self._speak(i, spec, fixture, fs, prev if spec.barge_in_after_ms is not None else None)
            self._emit_ready(final=False)
            step = self._next_step(spec, timeout_ns)
        for turn in self.timeline.turns:
            self._wait(lambda: self._turn_over(turn), (turn.speech_end_ns or time.monotonic_ns()) + timeout_ns)
            self._emit_ready(final=False)
        if self.timeline.turns and self.timeline.turns[-1].speech_end_ns:
            end = self.timeline.turns[-1].speech_end_ns + a.trailing_silence_ms * NS
            if self._expiry_ns is not None:  # hang up before a known expiry rather than be cut off
                end = min(end, self._expiry_ns - int(sc.load.reconnect_margin_s * 1e9))
            self._sleep_until(end)

    def _next_step(self, spec: TurnSpec, timeout_ns: int) -> int | None:
        """The scenario turn to speak next: a branching turn waits for its response and reads it."""
        if not spec.branches:
            return spec.next
        turn = self.timeline.turns[-1]
        self._wait(lambda: self._turn_over(turn), (turn.speech_end_ns or time.monotonic_ns()) + timeout_ns)
        return next_turn(spec, "".join(turn.response_transcript))

    def _frames(self, fixture: Any) -> Any:
        """This caller's frames of a fixture (prepared before load: a cache hit)."""
        a = self.sc.audio
        return fixtures.frames(fixture.id, self.in_fmt, a.chunk_ms, gain_db=a.perturb.gain_db,
                               snr_db=a.perturb.snr_db, seed=self.opt.seed % NOISE_VARIANTS,
                               directory=fixture.directory or self.sc.fixtures_dir)

    def _speak(self, i: int, spec: TurnSpec, fixture: Any, fs: Any, interrupted: TurnTimeline | None) -> None:
        a = self.sc.audio
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

    def _send(self, data: bytes, block: bool = True) -> bool:
        if self.transport is None:
            raise ConnectionError("not connected")
        return self.transport.send_text(data, block)

    def _send_recorded(self, data: bytes, block: bool = True) -> bool:
        if not self._send(data, block):
            return False
        self.recorder.on_sent(time.monotonic_ns(), data)
        return True

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


def run_session(scenario: Scenario, endpoint: Endpoint, options: SessionOptions | None = None) -> list[TurnRecord]:
    """Run one caller session to the end and return its turn records (the simple public API)."""
    session = CallerSession(scenario, endpoint, options or SessionOptions())
    session.run()
    return session.records
