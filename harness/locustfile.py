"""voiceload for Locust: ``locust -f harness/locustfile.py --scenario scenarios/smoke.yaml``.

One task = one caller session through the engine. Each turn fires a few low-cardinality request
events (TURN = first audio, VAD, TRANSCRIPT; CONNECT per session) so Locust's UI, --csv and --html
show them; exact per-turn records go to reports/<run-id>/turns.jsonl — from workers to the master
piggybacked on Locust's stats reports — and our report and threshold gate are computed from those,
never from Locust's rounded stats. Each test (a headless run, or each start → stop in the web UI)
has its own state, run directory, report and verdict (harness/locust_run.py); at its stop every
worker sends its last records before the report is written, so no worker record is lost.

This file wires the test's lifecycle (start, stop, quit, worker reports) and the load shape; the
rest is apart: options and start-up in locust_setup.py, the node's state and the test made at its
start in locust_node.py, the user in locust_user.py, the rows it fires in locust_rows.py.
"""

from __future__ import annotations

import logging
import os
import time

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by locust -f: make the harness package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locust import LoadTestShape, events  # noqa: E402  (locust patches gevent first)
from locust.runners import MasterRunner, WorkerRunner  # noqa: E402

from harness import locust_setup  # noqa: E402,F401  (registers voiceload's options and the init listener)
from harness.client.gcmode import realtime_gc  # noqa: E402
from harness.exitcodes import EXIT_INCOMPLETE, MEANING, worst  # noqa: E402
from harness.locust_node import NODE, begin, current  # noqa: E402
from harness.locust_run import LocustRun  # noqa: E402
from harness.locust_ui import write_final_csv  # noqa: E402
from harness.locust_user import VoiceUser  # noqa: E402,F401  (Locust finds the user class here)

log = logging.getLogger("voiceload")


@events.report_to_master.add_listener
def _report_to_master(client_id, data, **_kw) -> None:
    # Every report carries this worker's live session count, records or not: the master needs all
    # workers' counts to stamp turns with the run's concurrency.
    if NODE.test is not None:
        data["voiceload"] = NODE.test.payload()


@events.worker_report.add_listener
def _worker_report(client_id, data, **_kw) -> None:
    if NODE.test is not None and data.get("voiceload"):
        NODE.test.receive(client_id, data["voiceload"])


@events.test_start.add_listener
def _test_start(environment, **_kw) -> None:
    run = current(environment)
    if not isinstance(environment.runner, MasterRunner) and run.release_gc is None:
        run.release_gc = realtime_gc()  # nodes that run users: no collector pause under every session


@events.test_stopping.add_listener
def _stopping(environment, **_kw) -> None:
    if NODE.test is not None:
        NODE.test.stopping = True


@events.test_stop.add_listener
def _test_stop(environment, **_kw) -> None:  # fired once the users have stopped: this test's report
    run, runner = NODE.test, environment.runner
    if run is None or run.ended:
        return
    if isinstance(runner, WorkerRunner):
        run.finish()
        runner._send_stats()  # this test's last records and stats, marked final, before "client_stopped"
        # Its users have stopped; Locust's worker then sleeps stop_timeout in its message loop before it is
        # ready again, so a headless run's "quit" waited that long (30 s by default) after the master had
        # finished. Nothing is left to wait for; the next spawn message brings the stop-timeout back.
        environment.stop_timeout = 0
        return
    _end(environment, run, interrupted=NODE.interrupted, collect=True)


def _end(environment, run: LocustRun, interrupted: str | None = None, collect: bool = False) -> None:
    """Write the test's report; ``collect``: the workers were stopped, wait for their last records."""
    runner, meta = environment.runner, {}
    if isinstance(runner, MasterRunner):
        gone = run.await_workers(runner, environment.stop_timeout) if collect else []
        for wid in gone:
            run.output.note(f"worker {wid} went missing during the run; its records up to its last report "
                            f"are kept, turns it ran after that are lost")
        meta["workers"] = {"seen": sorted(run.workers_seen), "missing": gone}
    code = run.finish(interrupted=interrupted, junit=environment.parsed_options.voiceload_junit or None,
                      meta=meta)
    NODE.exit_code = worst(NODE.exit_code, code)  # the process exits with its worst test's code
    log.info("voiceload: test %d finished with exit code %d (%s)", NODE.tests, code, MEANING[code])
    if NODE.tests > 1 and NODE.exit_code != code:
        log.info("voiceload: the process will exit %d (%s): the worst of its %d tests", NODE.exit_code,
                 MEANING[NODE.exit_code], NODE.tests)


@events.quitting.add_listener
def _quitting(environment, **_kw) -> None:
    run, runner = NODE.test, environment.runner
    if isinstance(runner, WorkerRunner):
        if run is not None:
            run.release()
            log.info("voiceload worker %s: %d turn records and %d session records produced, %d not yet shipped",
                     runner.client_id, run.turns_produced, run.sessions_produced,
                     len(run.pending_turns) + len(run.pending_sessions))
        return
    if run is not None and not run.ended:  # Ctrl-C, SIGTERM, or a quit while the test ran
        _end(environment, run, interrupted=NODE.interrupted or "a signal or quit before the test's end")
    if NODE.tests == 0 and NODE.first_output is not None:
        NODE.first_output.note("run incomplete: no test was started")
        NODE.first_output.finish(write_report=False)
        NODE.exit_code = EXIT_INCOMPLETE
    write_final_csv(environment)
    if environment.process_exit_code is None and NODE.exit_code is not None:  # a lost-records exit (2) stays
        environment.process_exit_code = NODE.exit_code


class VoiceloadShape(LoadTestShape):
    """The scenario's load shape (step, spike, soak, breakpoint, arrivals; flat in headless runs).

    It reads -u/-r/-t and the web UI form (``use_common_options``): -u rescales the shape to that peak.
    At the plan's end users finish the session they are in (as in ``voiceload run``, bounded by the
    drain); once none is left the shape stops the test itself, so every worker sends its last records
    and the report is written before a headless run quits (Locust's quit alone would drop the workers'
    last records, shared/notes §3.3).
    """

    use_common_options = True

    def tick(self):
        run = begin(self.runner.environment)
        want = None if NODE.interrupted else run.plan.tick(self.get_run_time(), run.window)
        if want is not None and want[0] > 0:
            return want
        if want is not None:
            run.drain_since = run.drain_since or time.monotonic()
            busy = self.runner.user_count > 0 or run.active > 0
            if isinstance(self.runner, MasterRunner):  # its user count lags: ask what workers reported since
                busy = busy or not run.workers_idle(self.runner, run.drain_since)
            if busy:
                return 0, max(want[1], float(self.runner.user_count))  # all users retire at once
        self.runner.stop()  # the plan is over (or a breakpoint was found): this test's report now
        if isinstance(self.runner, MasterRunner) and self.runner.environment.parsed_options.headless:
            # Stopped workers leave the master's client list until they re-register (after stop-timeout),
            # so Locust's quit would miss them: tell each worker of this test to quit, by id.
            for wid in sorted(run.expected_workers):
                self.runner.send_message("quit", None, client_id=wid)
        return None


os.environ.setdefault("VOICELOAD_IN_LOCUST", "1")
