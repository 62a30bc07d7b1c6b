"""A caller session's connections: connect (retries, connection budget), configure, and reconnect
when the service ends the session at its maximum length (harness/quota.py).

A mixin of CallerSession (harness/client/session.py): the methods share the session's state.
"""

from __future__ import annotations

import time

import gevent.event

from .. import diagnosis
from ..quota import classify_throttle, is_session_expiry
from ..protocol import events as ev
from .. import audio
from .expiry import EXPIRED, PLANNED, expiry_ns, fits
from .tools import session_with_tools
from .transport import ConnectError, connect

NS = 1_000_000
MAX_CONNECT_ATTEMPTS = 4
MAX_RETRY_AFTER_S = 30.0
BUDGET_ABORT = "stopped while waiting for connection budget"  # the run ended before this caller's turn came


def _ignore_message(payload: bytes, t: int, binary: bool) -> None:
    pass


class Connection:
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
                rec.http_status, rec.error = exc.status, diagnosis.diagnose(exc)[:500]
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
        self._expiry_ns = expiry_ns(self._created, self._created_ns, self.ep.limits.max_session_minutes)
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

    # -- the maximum session length (harness/quota.py, client/expiry.py) ---------------------------------
    def _expired(self) -> bool:
        """The server closed because the session reached its maximum length (error session_expired)."""
        texts = [m for _, m in list(self.timeline.session_errors)[self._errors_seen:]]
        texts += [m for t in self.timeline.turns[self._turns_seen:] for _, m in t.errors]
        return any(is_session_expiry(x) for x in texts + [self.timeline.close_detail])

    def _fits_before_expiry(self, utterance_ms: float) -> bool:
        """Would the next turn (its utterance, then a reply as long as the longest so far) end
        ``load.reconnect_margin`` before this connection's known expiry? A connection that has not
        spoken a turn yet always takes the next one: a new session is as long as it gets."""
        prev = self.timeline.turns[-1] if len(self.timeline.turns) > self._turns_seen else None
        if prev is None or self._expiry_ns is None:
            return True
        if prev.response_done_ns is not None and prev.speech_end_ns:
            reply_s = (prev.response_done_ns - prev.speech_end_ns) / 1e9
            self._reply_s = min(max(self._reply_s, reply_s), self.sc.load.turn_timeout_s)
        turn_s = utterance_ms / 1000 + self._reply_s
        return fits(self._expiry_ns, time.monotonic_ns(), turn_s, self.sc.load.reconnect_margin_s)

    def _renew_between_turns(self, utterance_ms: float) -> bool:
        """Between turns, nothing in flight: replace a session that expired meanwhile, or that would
        expire before the next turn ends, so no turn is cut. False: no new session could be opened."""
        expired = self._expired()
        planned = not expired and self.timeline.closed_ns is None and not self._fits_before_expiry(utterance_ms)
        if not (expired or planned) or self.opt.stopping():
            return True
        return self._reconnect(EXPIRED if expired else PLANNED)

    def _reconnect(self, reason: str = EXPIRED) -> bool:
        """Open a new session and go on with the conversation where the old one stopped (soaks).

        ``EXPIRED``: the server ended the session; the turn it cut short is classified session_expired.
        ``PLANNED``: between turns, before a known expiry; nothing is in flight, nothing is lost."""
        rec = self.record
        t_closed = self.timeline.closed_ns or time.monotonic_ns()
        self._cut = "session_expired" if reason == EXPIRED else ""  # the cap's doing, not the agent's
        self._emit_ready(final=True)
        self._cut = ""
        if self.mic is not None:
            self.mic.stop()
        if self.transport is not None:
            self.transport.on_message = _ignore_message  # the old connection's close is not this session's
            self.transport.close(1000)
            self.transport = None
        self.timeline.closed_ns, self.timeline.close_detail = None, ""
        self._errors_seen, self._turns_seen = len(self.timeline.session_errors), len(self.timeline.turns)
        self._created, self._updated = None, gevent.event.AsyncResult()
        if not (self._connect() and self._configure()):
            return False
        rec.reconnects += 1
        rec.reconnect_gap_ms.append(round((time.monotonic_ns() - t_closed) / NS, 3))
        rec.reconnect_reasons.append(reason)
        self._start_mic()
        return True
