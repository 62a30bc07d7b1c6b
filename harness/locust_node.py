"""What one Locust process keeps between tests, and the test that is running on it.

The scenario and the last verdict outlive a test; everything of one test (records, run directory,
plan, stopping flag, simulators) is in the LocustRun made at its start (harness/locust_run.py), so
the web UI's start → stop → start runs a real second test with its own run directory and report.
"""

from __future__ import annotations

import logging
import sys

import gevent
from locust.runners import MasterRunner, WorkerRunner

from . import redaction
from . import locust_coord as coord
from .exitcodes import EXIT_USAGE
from .locust_run import LocustRun, run_dir_for
from .rundir import new_run_id
from .scenario import ScenarioError, load_scenario
from .shapes import WORKER_REPORT_INTERVAL_S, make_plan, peak_users

log = logging.getLogger("voiceload")


class Node:
    """What outlives one test in this process: the scenario and the verdict of the last test."""

    def __init__(self) -> None:
        self.scenario = None
        self.test: LocustRun | None = None
        self.tests = 0
        self.first_output = None  # made at init: a bad --voiceload-out is refused (exit 2) before any load
        self.run_time: float | None = None  # headless: -t, run by our shape (so a stop can collect records)
        self.exit_code: int | None = None  # the worst finished test's verdict (exitcodes.worst)
        self.link = None  # worker: how its users get connection budget and arrivals from the master
        self.estimate = None  # plan.ScenarioPlan printed at start (master / local)
        self.interrupted: str | None = None  # the signal that ended a headless run early


NODE = Node()


def load(environment) -> None:
    """The scenario of --scenario (exit 2 if invalid), its say: lines synthesised before any session."""
    opts = environment.parsed_options
    if NODE.scenario is not None and NODE.scenario.file == opts.scenario:
        return
    try:
        NODE.scenario = load_scenario(opts.scenario)
    except ScenarioError as exc:
        log.error("invalid scenario\n%s", exc)
        sys.exit(EXIT_USAGE)
    from .tts.prepare import SpeechError, prepare_speech

    try:  # say: lines: synthesised (or read from the cache) before this process starts any session
        prepare_speech(NODE.scenario, progress=sys.stderr)
    except SpeechError as exc:
        log.error("%s", redaction.redact(str(exc)))
        sys.exit(EXIT_USAGE)


def begin(environment) -> LocustRun:
    """The running test on the master / local runner, made at its start (a shape ticks before test_start)."""
    run = NODE.test
    if run is not None and not run.ended:
        return run
    from .rundir import OutputError, RunOutput

    opts, runner, sc = environment.parsed_options, environment.runner, NODE.scenario
    NODE.tests += 1
    duration = opts.run_time or NODE.run_time
    drain = environment.stop_timeout + WORKER_REPORT_INTERVAL_S + 2.0  # at most; ends once no user is left
    plan = make_plan(sc.load, users=opts.num_users, spawn_rate=opts.spawn_rate, duration_s=duration, drain_s=drain)
    output = NODE.first_output if NODE.tests == 1 else None
    if output is None:
        try:
            output = RunOutput(sc, out_dir=run_dir_for(opts.voiceload_out, NODE.tests),
                               run_id=f"{new_run_id(sc.name)}-{NODE.tests}", extra={"runner": type(runner).__name__})
        except OutputError as exc:
            log.error("%s; stopping the test", exc)
            gevent.spawn(runner.stop)
    if output is not None:
        if NODE.estimate is not None:
            from .plan import plan_dict

            output.meta["plan"] = plan_dict(NODE.estimate)
        output.begin(load={"users": plan.users, "peak_users": peak_users(plan), "spawn_rate": plan.spawn_rate,
                           "duration_s": duration})  # what runs (flags, form), as voiceload run records it

        def _write_failed(message: str) -> None:  # e.g. the disk filled up: stop rather than lose records silently
            log.error("voiceload: cannot write records (%s); stopping the run", message)
            environment.process_exit_code = EXIT_USAGE
            gevent.spawn(runner.quit)

        output.on_write_error = _write_failed
    expected = {c.id for c in runner.clients.all} if isinstance(runner, MasterRunner) else set()
    run = LocustRun(sc, output.run_id if output else "", output=output, plan=plan, expected_workers=expected)
    from .arrivals import ArrivalSpec
    from .client.endpoints import resource_limits

    arrivals = ArrivalSpec.from_plan(plan) if plan.kind == "arrivals" else None
    resources = resource_limits(sc, opts.voiceload_profile or None, opts.voiceload_target or None)
    run.coord = coord.Coordinator(resources, arrivals, runner if isinstance(runner, MasterRunner) else None)
    if not isinstance(runner, MasterRunner):
        run.link = coord.LocalLink(run.coord)
    opts.voiceload_run_id = run.run_id  # reaches the workers with the spawn message: their records say which test
    NODE.test = run
    if output is not None:
        log.info("voiceload: test %d, records in %s", NODE.tests, output.dir)
    return run


def current(environment) -> LocustRun:
    """The test a new user belongs to; a worker makes its own at test start (options arrive then)."""
    run = NODE.test
    if isinstance(environment.runner, WorkerRunner):
        run_id = getattr(environment.parsed_options, "voiceload_run_id", "")
        if run is None or run.ended or run.run_id != run_id:
            load(environment)
            run = NODE.test = LocustRun(NODE.scenario, run_id)
            run.link = NODE.link
        return run
    return begin(environment)
