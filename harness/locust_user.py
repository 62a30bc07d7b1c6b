"""The Locust user: one task = one complete caller session of the scenario through the engine."""

from __future__ import annotations

import random

import gevent
from locust import User, task

from .client.runner import MAX_USER_BACKOFF_S
from .client.session import CallerSession, SessionOptions
from .locust_node import current
from .locust_rows import quota_row, session_rows, turn_rows
from .locust_run import LocustRun
from .records import SessionRecord, TurnRecord


class VoiceUser(User):
    """One synthetic caller; each task is one complete session of the scenario's conversation."""

    _failures = 0
    run: LocustRun

    def wait_time(self) -> float:
        """The scenario's think time between sessions (this test's scenario)."""
        lo, hi = self.run.scenario.load.think_time_s
        return lo + random.random() * (hi - lo)

    def on_start(self) -> None:
        self.run = current(self.environment)  # this user's records go to its own test, never the next one
        self.run.ensure_endpoints(self.environment.parsed_options)

    @task
    def call(self) -> None:
        run = self.run
        n = run.sessions_started
        pick = n
        if run.scenario.load.shape.type == "arrivals":  # open loop: this line takes the next caller on the schedule
            arrival = None
            if run.link is not None and not run.arrivals_spent:
                arrival = run.link.next_arrival(lambda: run.stopping)
            if arrival is None:
                run.arrivals_spent = not run.stopping  # no message per idle line per second during the drain
                gevent.sleep(1.0)  # the schedule is spent: the line stays idle until the shape stops
                return
            pick, delay = arrival
            if delay > 0:
                gevent.sleep(delay)
        run.sessions_started += 1
        endpoint = run.endpoints[pick % len(run.endpoints)]
        worker = getattr(self.environment.runner, "client_id", None) or "local"
        opts = SessionOptions(run_id=run.run_id, worker=worker, session_id=f"{worker}-{n}", seed=n,
                              on_record=self._turn, active_sessions=lambda: run.active, stopping=lambda: run.stopping,
                              recording_dir=run.recording_dir(self.environment.parsed_options),
                              connect_gate=self._gate if run.link is not None else None)
        session = CallerSession(run.scenario, endpoint, opts)
        run.active += 1
        try:
            session.run()
        finally:  # also when Locust kills the user at stop-timeout: the session record is never lost
            run.active -= 1
            self._session(session.record)
        rec = session.record
        self._failures = self._failures + 1 if rec.turns_attempted == 0 and rec.outcome != "ok" else 0
        if rec.retry_after_s:  # throttled: back off as long as the service asked
            gevent.sleep(min(rec.retry_after_s, MAX_USER_BACKOFF_S * 3))
        elif self._failures:  # a target that refuses us is not hammered in a tight loop
            gevent.sleep(min(MAX_USER_BACKOFF_S, 2.0 ** (self._failures - 1)))

    def _gate(self, endpoint):
        run = self.run
        slot = run.link.gate(endpoint, lambda: run.stopping)
        if slot is not None and endpoint.limits.connections_per_minute is not None:
            quota_row(self.environment.events.request.fire, run.scenario, slot.waited_s)
        return slot

    def _turn(self, rec: TurnRecord) -> None:
        turn_rows(self.environment.events.request.fire, self.run.scenario, rec)
        self.run.record("turn", rec.to_dict())

    def _session(self, rec: SessionRecord) -> None:
        session_rows(self.environment.events.request.fire, self.run.scenario, rec)
        self.run.record("session", rec.to_dict())
