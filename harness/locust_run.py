"""One Locust test — web UI start → stop, or a headless run — as an object created at test start.

A Locust process can run many tests (the web UI's start, stop, start again); everything that belongs
to one of them lives here, never in module globals: its records and run directory, its load plan,
its "stopping" flag, its embedded simulators, the records a worker has not shipped yet and, on the
master, which workers still owe their last report. The report and the verdict are written when the
test stops, so each test gets its own run directory, report and exit code.

Records from workers carry the test's run id (sent to workers with the spawn message), so a late
report of an earlier test is never appended to the next test's directory.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import gevent

from . import redaction
from .exitcodes import EXIT_OK, EXIT_USAGE
from .shapes import WORKER_REPORT_INTERVAL_S, ShapePlan, StepWindow

log = logging.getLogger("voiceload")
WORKER_ACTIVE_STALE_S = 10.0  # a worker silent this long (gone, or stopped) no longer counts


class LocustRun:
    """The state of one test on one node (local runner, master or worker)."""

    def __init__(self, scenario: Any, run_id: str, *, output: Any = None, plan: ShapePlan | None = None,
                 expected_workers: set[str] | None = None) -> None:
        self.scenario = scenario
        self.run_id = run_id
        self.output = output  # RunOutput on the master / local runner; None on workers
        self.plan = plan
        self.window = StepWindow(plan, time.time()) if plan is not None else None
        self.pending_turns: list[dict] = []  # worker: records not shipped yet
        self.pending_sessions: list[dict] = []
        self.sessions_started = 0
        self.turns_produced = 0
        self.sessions_produced = 0
        self.active = 0
        self.stopping = False
        self.ended = False
        self.exit_code: int | None = None
        self.lock = threading.Lock()
        self.stack = ExitStack()
        self.endpoints: list = []
        self.release_gc = None  # gcmode.realtime_gc's release while this test runs users here
        self.coord = None  # locust_coord.Coordinator: connection budget and arrivals (master / local)
        self.link = None  # how this node's users get them (LocalLink, or the worker's WorkerLink)
        self.arrivals_spent = False  # arrivals shape: the schedule is spent, idle lines stop asking the master
        # master only
        self.expected_workers = set(expected_workers or ())
        self.final_from: set[str] = set()
        self.workers_seen: set[str] = set()
        self.worker_active: dict[str, tuple[int, float]] = {}  # worker -> (live sessions, when)
        self.drain_since: float | None = None  # when the plan asked for zero users (monotonic)

    # -- records ------------------------------------------------------------------------------------
    def record(self, kind: str, data: dict) -> None:
        if kind == "turn":
            self.turns_produced += 1
        else:
            self.sessions_produced += 1
        if self.output is not None:  # local runner: straight to disk
            (self._add_turn if kind == "turn" else self.output.add_session)(data)
        else:  # worker: ship with the next stats report
            (self.pending_turns if kind == "turn" else self.pending_sessions).append(data)

    def _add_turn(self, data: dict) -> None:
        """A turn record reaches the run (local runner or master): to disk, and to the breakpoint step."""
        self.output.add_turn(data)
        if self.window is not None:
            self.window.add(data)

    def payload(self) -> dict:
        """Worker → master, on every stats report: this test's new records and live session count."""
        out = {"run_id": self.run_id, "turns": self.pending_turns, "sessions": self.pending_sessions,
               "active": self.active, "final": self.ended}
        self.pending_turns, self.pending_sessions = [], []
        return out

    def receive(self, client_id: str, payload: dict) -> None:
        """Master: merge a worker's report; a report of another test is dropped (never mixed in)."""
        self.workers_seen.add(client_id)
        if payload.get("run_id") != self.run_id or self.output is None:
            if payload.get("turns") or payload.get("sessions"):
                log.warning("voiceload: dropped %d turn and %d session records of another test (%s) from %s",
                            len(payload.get("turns", ())), len(payload.get("sessions", ())),
                            payload.get("run_id"), client_id)
            return
        now = time.monotonic()
        others = sum(n for w, (n, at) in self.worker_active.items()
                     if w != client_id and now - at < WORKER_ACTIVE_STALE_S)
        for t in payload.get("turns", []):
            # A worker only knows its own sessions; the run's concurrency at this turn is its count then
            # plus the other workers' latest (reported every few seconds: an estimate at that resolution).
            if isinstance(t.get("active_sessions"), int):
                t["active_sessions"] += others
            self._add_turn(t)
        for s in payload.get("sessions", []):
            self.output.add_session(s)
        if isinstance(payload.get("active"), int):
            self.worker_active[client_id] = (payload["active"], now)
        if payload.get("final") and client_id not in self.final_from:
            self.final_from.add(client_id)
            log.info("voiceload: worker %s sent its last records of this test", client_id)

    def workers_idle(self, runner: Any, since: float) -> bool:
        """Master: every live worker of this test has reported, after ``since``, no session in flight."""
        missing = {c.id for c in runner.clients.missing}
        return all(w in self.worker_active and self.worker_active[w][1] >= since and self.worker_active[w][0] == 0
                   for w in self.expected_workers - missing)

    def await_workers(self, runner: Any, stop_timeout: float) -> list[str]:
        """Master at test stop: wait (bounded) for every worker's last report of this test; returns the
        workers that never sent it (gone missing: their records after their last report are lost)."""
        deadline = time.monotonic() + stop_timeout + 2 * WORKER_REPORT_INTERVAL_S + 2.0
        while time.monotonic() < deadline:
            alive = {c.id for c in runner.clients.all if c not in runner.clients.missing}
            if not (self.expected_workers & alive) - self.final_from:
                break
            gevent.sleep(0.1)
        return sorted(self.expected_workers - self.final_from)

    # -- endpoints (nodes that run users) --------------------------------------------------------------
    def ensure_endpoints(self, opts: Any) -> list:
        from .client.endpoints import open_endpoints
        from .client.session import prepare

        with self.lock:
            if not self.endpoints:
                prepare(self.scenario)
                run_dir = self.output.dir if self.output else None
                self.endpoints = self.stack.enter_context(open_endpoints(
                    self.scenario, run_dir=run_dir, override_url=opts.voiceload_target or None,
                    profile=opts.voiceload_profile or None))
                if self.output is not None:
                    self.output.meta["targets"] = [{"name": e.name, "url": redaction.redact(e.display)}
                                                   for e in self.endpoints]
            return self.endpoints

    def recording_dir(self, opts: Any) -> str | None:
        """Local runs record next to the records; workers only when given their own --voiceload-out."""
        if self.output is not None:
            return str(self.output.dir / "recordings")
        return f"{opts.voiceload_out}/recordings" if opts.voiceload_out else None

    def release(self) -> None:
        """Users have stopped: stop this test's embedded simulators and give the collector back."""
        if self.release_gc is not None:
            self.release_gc()
            self.release_gc = None
        self.stack.close()

    # -- the end ------------------------------------------------------------------------------------------
    def finish(self, *, interrupted: str | None = None, junit: str | None = None,
               meta: dict[str, Any] | None = None) -> int:
        """Write this test's report and return its exit code (harness/exitcodes.py). Idempotent."""
        self.stopping = True
        self.ended = True
        if self.exit_code is not None:
            return self.exit_code
        self.release()
        out = self.output
        if out is None:  # a worker: its master decides
            self.exit_code = EXIT_OK
            return self.exit_code
        if self.coord is not None:
            self.coord.close()
            if self.coord.resources:  # how the connection quota shaped the run
                out.meta["quota"] = self.coord.summary()
        from .quota import note_reconnects

        note_reconnects(out)
        if interrupted:
            out.meta.update(status="interrupted", interrupted={
                "signal": interrupted, "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
            out.note(f"interrupted by {interrupted}: the run is incomplete; records up to then are kept")
        else:
            out.meta["status"] = "complete"
        out.meta.update(meta or {})
        if self.plan is not None and self.plan.breakpoint:
            out.meta["breakpoint"] = self.plan.breakpoint
        paths = out.finish()  # report.html judges the run the same way (report/verdict.py)
        log.info("voiceload report: %s", paths.get("report.html") or out.dir)
        self.exit_code = self._verdict(junit)
        return self.exit_code

    def _verdict(self, junit: str | None) -> int:
        """report/verdict.py's judgement (as `voiceload check`), recorded in run.json; lost records → 2."""
        from .report.check import format_table, write_junit
        from .report.verdict import judge

        out = self.output
        v = judge(out.dir)
        if v.thresholds:
            log.info("voiceload thresholds:\n%s", format_table(v.thresholds))
        if junit:
            write_junit(v.thresholds, junit)
        out.meta["verdict"] = v.to_dict()
        out.save_meta()
        log.info("voiceload: %s", v.line())
        return EXIT_USAGE if out.write_error is not None else v.exit_code


def run_dir_for(base: str | None, n: int) -> str | None:
    """--voiceload-out DIR holds the process's first test; later tests get DIR-2, DIR-3…"""
    if not base or n == 1:
        return base or None
    p = Path(base)
    return str(p.with_name(f"{p.name}-{n}"))
