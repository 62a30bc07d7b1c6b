"""A plain gevent runner for N concurrent callers: the engine without Locust (CLI and benchmarks).

Users follow the scenario's load shape (shapes.py, the same plans Locust uses); each user runs
sessions back to back, alternating targets so a comparison sees the same load on each. Records go to
``on_turn``/``on_session`` the moment they exist.
"""

from __future__ import annotations

import itertools
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

import gevent
import gevent.event
import gevent.lock
import gevent.pool

from ..abort import AbortWatch
from ..arrivals import ArrivalSchedule, ArrivalSpec
from ..histogram import MsHistogram
from ..quota import Budgets
from ..records import SessionRecord, TurnRecord, ended_as_expected
from ..scenario import Scenario
from ..shapes import ShapePlan, StepWindow
from .gcmode import realtime_gc
from .session import CallerSession, Endpoint, SessionOptions

#: A user whose sessions cannot even start a turn (refused, 401, DNS, TLS...) waits 1, 2, 4... s
#: (at most this long) before its next session instead of hammering the target in a tight loop.
MAX_USER_BACKOFF_S = 10.0


@dataclass
class LiveStats:
    """Counters and the last minute of first-audio latencies, for the progress line: bounded, so a
    multi-hour soak does not grow with every turn (the records themselves are on disk)."""

    RECENT_S = 60.0

    t0: float = field(default_factory=time.monotonic)
    turns: int = 0
    failures: int = 0
    sessions: int = 0
    rejected: int = 0
    failed_sessions: int = 0  # sessions that never ran a turn (refused, connect error...)
    invalid: int = 0
    throttled: int = 0
    recent: deque = field(default_factory=deque)  # (t since t0, first_audio_ms) of valid turns

    def add(self, rec: TurnRecord) -> None:
        now = time.monotonic() - self.t0
        self.turns += 1
        self.throttled += bool(rec.throttle)  # the quota's doing, not the agent's: not a failure
        self.failures += not rec.throttle and not ended_as_expected(rec.complete, rec.expectations)
        self.invalid += not rec.valid
        if rec.valid and rec.first_audio_ms is not None:
            self.recent.append((now, rec.first_audio_ms))
        while self.recent and self.recent[0][0] < now - self.RECENT_S:
            self.recent.popleft()

    def line(self, users: int, waiting: int = 0, queued: int = 0) -> str:
        lat = sorted(fa for _, fa in self.recent)

        def pct(q: float) -> str:
            return f"{lat[min(len(lat) - 1, int(q * len(lat)))]:.0f}" if lat else "-"

        return (f"[{time.monotonic() - self.t0:6.1f}s] users={users} sessions={self.sessions} "
                f"turns={self.turns} first_audio p50={pct(0.5)} p95={pct(0.95)} ms (last minute) "
                f"failures={self.failures + self.failed_sessions} (turns {self.failures}, sessions "
                f"{self.failed_sessions}) rejected={self.rejected}"
                + (f" throttled={self.throttled}" if self.throttled else "")
                + (f" waiting_for_quota={waiting}" if waiting else "")
                + (f" waiting_for_a_line={queued}" if queued else ""))


class LoadRunner:
    def __init__(self, scenario: Scenario, endpoints: list[Endpoint], plan: ShapePlan, *,
                 on_turn: Callable[[TurnRecord], None], on_session: Callable[[SessionRecord], None],
                 run_id: str = "", sessions_per_user: int | None = None, kernel_stamps: bool = True,
                 progress: TextIO | None = sys.stderr, worker: str = "local", seed: int = 0,
                 recording_dir: str | None = None,
                 early_signal: Callable[[], dict[str, str] | None] = lambda: None):
        self.sc = scenario
        self.early_signal = early_signal  # a signal that came before run() installed its handlers (start-up)
        self.endpoints = endpoints
        self.plan = plan
        self.on_turn = on_turn
        self.on_session = on_session
        self.run_id = run_id
        self.sessions_per_user = sessions_per_user if sessions_per_user is not None else scenario.load.sessions_per_user
        self.kernel_stamps = kernel_stamps
        self.progress = progress
        self.worker = worker
        self.seed = seed
        self.recording_dir = recording_dir
        self.stats = LiveStats()
        self.step_window = StepWindow(plan, time.time())  # re-based when run() starts
        self.pool = gevent.pool.Group()
        self.users: list[gevent.Greenlet] = []
        self._retiring: set[int] = set()
        self._finished: set[int] = set()  # users that ran their sessions_per_user: done, not to be replaced
        self._user_ids = itertools.count()
        self._session_ids = itertools.count()
        self.active = 0
        self.stopping = False
        self._stop = gevent.event.Event()
        self.lateness = MsHistogram()  # every frame's send lateness, all sessions merged
        self.stamp_delays = MsHistogram()  # user-space read stamp - kernel arrival stamp, per read
        self.worst_session_late_p99_ms: float | None = None  # the worst session's pacing p99
        self.budgets = Budgets(endpoints)  # per-resource connection budgets (target.limits)
        self.arrived = 0  # arrivals shape: callers that arrived so far
        self.queued = 0  # arrivals shape: callers waiting for a free line (max_concurrent)
        self.abort_watch = AbortWatch(scenario.load.abort_on)
        self.abort_reason: str | None = None  # load.abort_on tripped: why (the run is incomplete)
        self.interrupted: dict[str, str] | None = None  # {"signal": "SIGINT", "at": ISO time} once signalled

    # -- public ---------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the plan to its end (or until stop()); returns a small summary."""
        from .session import prepare

        prepare(self.sc)
        handlers, previous = self._install_signals()
        early = self.early_signal()
        if early is not None:  # signalled while the run started (its raise may have been lost): stop at once
            self.interrupted = dict(early)
            self._on_signal(getattr(signal, early["signal"], signal.SIGINT))
        ticker = gevent.spawn(self._progress_loop) if self.progress else None
        release_gc = realtime_gc()  # no 25-45 ms collector pauses under every session at once
        try:
            self._drive()
        finally:
            self.stopping = True
            self._stop.set()  # wakes users backing off after failed sessions
            self._retire_all()
            self.pool.join(timeout=self.sc.load.stop_timeout_s)
            self.pool.kill(block=True, timeout=5)
            if ticker:
                ticker.kill()
            for handle in handlers:
                handle.cancel()  # libev sets the signal back to SIG_DFL: a SIGTERM would kill the report
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            release_gc()  # after the drain: its sessions still stream in real time
        if self.progress:
            print(self.stats.line(0), file=self.progress, flush=True)
        return {"turns": self.stats.turns, "sessions": self.stats.sessions, "breakpoint": self.plan.breakpoint,
                "arrivals": self.arrived}

    def stop(self) -> None:
        self._stop.set()

    # -- load shape -------------------------------------------------------------------------------------
    def _drive(self) -> None:
        if self.plan.kind == "arrivals":
            return self._drive_arrivals()
        t0 = time.monotonic()
        self.step_window = StepWindow(self.plan, time.time())
        while not self._stop.is_set():
            elapsed = time.monotonic() - t0
            want = self.plan.tick(elapsed, self.step_window)
            if want is None:
                return
            users, rate = want
            if self._finished and len(self._finished) >= users and all(g.dead for g in self.users):
                return  # every caller ran its sessions_per_user: nothing left to do
            alive = [g for g in self.users if (not g.dead or id(g) in self._finished) and id(g) not in self._retiring]
            if users > len(alive):
                n = min(users - len(alive), max(1, int(rate)))
                for _ in range(n):
                    self._spawn_user()
            elif users < len(alive):
                for g in alive[users:]:
                    self._retiring.add(id(g))
            if users == 0 and self.plan.drain_s and all(g.dead for g in self.users):
                # Nothing left to drain: end early instead of idling through the drain window.
                if elapsed >= self.plan.total_s - self.plan.drain_s:
                    return
            self._stop.wait(1.0)

    def _drive_arrivals(self) -> None:
        """Open loop: one session per scheduled arrival, at most ``max_concurrent`` alive at once."""
        spec = ArrivalSpec.from_plan(self.plan)
        schedule = ArrivalSchedule(spec.times())
        lines = gevent.lock.BoundedSemaphore(spec.max_concurrent)
        t0 = time.monotonic()
        while not self._stop.is_set():
            nxt = schedule.next()
            if nxt is None:
                break
            i, at = nxt
            delay = t0 + at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self.arrived += 1
            self.users = [g for g in self.users if not g.dead]
            self.users.append(self.pool.spawn(self._arrival, i, lines))
        # Arrivals are over: let the sessions in flight finish, within the plan's drain.
        while not self._stop.is_set() and any(not g.dead for g in self.users):
            if time.monotonic() - t0 >= self.plan.total_s:
                return
            self._stop.wait(0.2)

    def _arrival(self, i: int, lines: Any) -> None:
        self.queued += 1
        try:
            lines.acquire()  # a free line (the concurrency cap); callers beyond it wait, as in a call queue
        finally:
            self.queued -= 1
        try:
            if not self.stopping:
                self.run_one(self.endpoints[i % len(self.endpoints)])
        finally:
            lines.release()

    def _spawn_user(self) -> None:
        uid = next(self._user_ids)
        g = self.pool.spawn(self._user_loop, uid)
        self.users.append(g)

    def _retire_all(self) -> None:
        for g in self.users:
            self._retiring.add(id(g))

    # -- one user ---------------------------------------------------------------------------------------
    def _user_loop(self, uid: int) -> None:
        me = gevent.getcurrent()
        lo, hi = self.sc.load.think_time_s
        failures = 0
        for j in itertools.count():
            if self.stopping or id(me) in self._retiring:
                return
            if self.sessions_per_user is not None and j >= self.sessions_per_user:
                self._finished.add(id(me))
                return
            endpoint = self.endpoints[(uid + j) % len(self.endpoints)]
            rec = self.run_one(endpoint, retiring=lambda: id(me) in self._retiring)
            failures = failures + 1 if rec.turns_attempted == 0 and rec.outcome != "ok" else 0
            if rec.retry_after_s and not self.stopping:  # throttled: back off as the service asked
                self._stop.wait(min(rec.retry_after_s, MAX_USER_BACKOFF_S * 3))
            elif failures and not self.stopping:
                self._stop.wait(min(MAX_USER_BACKOFF_S, 2.0 ** (failures - 1)))
            elif hi > 0 and not self.stopping:
                gevent.sleep(lo + (hi - lo) * ((uid * 7919 + j * 104729) % 1000) / 1000)

    def run_one(self, endpoint: Endpoint, retiring: Callable[[], bool] = lambda: False) -> SessionRecord:
        sid = next(self._session_ids)
        opts = SessionOptions(run_id=self.run_id, worker=self.worker, session_id=f"{self.worker}-{sid}",
                              seed=self.seed * 1_000_003 + sid, kernel_stamps=self.kernel_stamps,
                              on_record=self._turn, active_sessions=lambda: self.active,
                              stopping=lambda: self.stopping, recording_dir=self.recording_dir,
                              connect_gate=lambda ep: self.budgets.gate(ep, lambda: self.stopping or retiring()))
        session = CallerSession(self.sc, endpoint, opts)
        rec = session.record  # what run() returns; also filled in ("aborted") when the greenlet is killed
        self.active += 1
        try:
            session.run()
        finally:
            # In `finally`: a session killed at the end of stop_timeout still gets its one record.
            self.active -= 1
            if session.mic is not None:
                self.lateness.merge(session.mic.stats)
            if session.transport is not None:
                self.stamp_delays.merge(session.transport.stamp_delays)
            self.stats.sessions += 1
            self.stats.rejected += rec.outcome == "rejected"
            self.stats.failed_sessions += rec.outcome not in ("ok", "aborted") and rec.turns_attempted == 0
            reason = self.abort_watch.observe(rec)
            if reason is not None:
                self.abort_reason = reason
                if self.progress:
                    print(f"aborting: {reason}", file=self.progress, flush=True)
                self.stop()
            if rec.pacing_late_p99_ms is not None:
                self.worst_session_late_p99_ms = max(self.worst_session_late_p99_ms or 0.0, rec.pacing_late_p99_ms)
            self.on_session(rec)
        return rec

    def _turn(self, rec: TurnRecord) -> None:
        self.stats.add(rec)
        if self.step_window.holds:
            self.step_window.add(rec.to_dict())
        self.on_turn(rec)

    # -- plumbing -----------------------------------------------------------------------------------------
    def _progress_loop(self) -> None:
        while True:
            gevent.sleep(2.0)
            alive = sum(1 for g in self.users if not g.dead)
            print(self.stats.line(alive, self.budgets.waiting, self.queued), file=self.progress, flush=True)

    def _install_signals(self) -> tuple[list[Any], dict[int, Any]]:
        """Ctrl-C / SIGTERM stop the load gracefully; the caller still writes the report. Returns the
        handles and the Python handlers they replace, put back after the run."""
        installed, previous = [], {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                installed.append(gevent.signal_handler(sig, self._on_signal, sig))
            except (ValueError, OSError):  # not the main thread
                continue
            if signal.getsignal(sig) is not None:  # None: not installed from Python, nothing to put back
                previous[sig] = signal.getsignal(sig)
        return installed, previous

    def _on_signal(self, sig: int = signal.SIGINT) -> None:
        if self.interrupted is None:
            import datetime as dt

            self.interrupted = {"signal": signal.Signals(sig).name,
                                "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        if self.progress:
            print("stopping: finishing turns in flight, then writing the report…", file=self.progress, flush=True)
        self.stopping = True
        self._stop.set()
