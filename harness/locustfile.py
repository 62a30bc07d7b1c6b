"""voiceload for Locust: ``locust -f harness/locustfile.py --scenario scenarios/smoke.yaml``.

One task = one caller session through the engine. Each turn fires a few low-cardinality request
events (TURN = first audio, VAD, TRANSCRIPT; CONNECT per session) so Locust's UI, --csv and --html
show them; exact per-turn records go to reports/<run-id>/turns.jsonl — from workers to the master
piggybacked on Locust's stats reports — and our report and threshold gate are computed from those,
never from Locust's rounded stats. Each test (a headless run, or each start → stop in the web UI)
has its own state, run directory, report and verdict (harness/locust_run.py); at its stop every
worker sends its last records before the report is written, so no worker record is lost.
"""

from __future__ import annotations

import logging
import os
import time

import gevent
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by locust -f: make the harness package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locust import LoadTestShape, User, between, events, task  # noqa: E402  (locust patches gevent first)
from locust.runners import MasterRunner, WorkerRunner  # noqa: E402

from harness import auth  # noqa: E402
from harness import locust_coord as coord  # noqa: E402
from harness.client.gcmode import realtime_gc  # noqa: E402
from harness.client.runner import MAX_USER_BACKOFF_S  # noqa: E402
from harness.client.session import BUDGET_ABORT, CallerSession, SessionOptions  # noqa: E402
from harness.exitcodes import EXIT_INCOMPLETE, EXIT_USAGE, MEANING  # noqa: E402
from harness.locust_run import LocustRun, run_dir_for  # noqa: E402
from harness.locust_ui import apply_defaults, install_web_ui, write_final_csv  # noqa: E402
from harness.records import SessionRecord, TurnRecord  # noqa: E402
from harness.scenario import ScenarioError, load_scenario  # noqa: E402
from harness.rundir import new_run_id  # noqa: E402
from harness.shapes import WORKER_REPORT_INTERVAL_S, make_plan, peak_users  # noqa: E402

log = logging.getLogger("voiceload")


class _Node:
    """What outlives one test in this process: the scenario and the verdict of the last test.

    Everything that belongs to one test (records, run directory, plan, stopping flag, simulators) is in
    the LocustRun made at its start (harness/locust_run.py), so the web UI's start → stop → start runs a
    real second test with its own run directory and report.
    """

    def __init__(self) -> None:
        self.scenario = None
        self.test: LocustRun | None = None
        self.tests = 0
        self.first_output = None  # made at init: a bad --voiceload-out is refused (exit 2) before any load
        self.run_time: float | None = None  # headless: -t, run by our shape (so a stop can collect records)
        self.exit_code: int | None = None  # the last finished test's verdict
        self.link = None  # worker: how its users get connection budget and arrivals from the master
        self.estimate = None  # plan.ScenarioPlan printed at start (master / local)
        self.interrupted: str | None = None  # the signal that ended a headless run early


NODE = _Node()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    g = parser.add_argument_group("voiceload", "Voice agent load test options (each also from an environment "
                                               "variable or locust.conf)")
    g.add_argument("--scenario", default="scenarios/smoke.yaml", env_var="VOICELOAD_SCENARIO",
                   help="scenario YAML; flat scenarios honour -u/-r/-t, shaped ones are rescaled so -u is "
                        "their peak")
    g.add_argument("--voiceload-out", default="", env_var="VOICELOAD_OUT",
                   help="output directory for records/report (later tests of the web UI: DIR-2, DIR-3…)")
    g.add_argument("--voiceload-target", default="", env_var="VOICELOAD_TARGET",
                   help="endpoint URL overriding the scenario's targets")
    g.add_argument("--voiceload-profile", default="", env_var="VOICELOAD_PROFILE",
                   help="simulator profile for embedded targets")
    g.add_argument("--voiceload-junit", default="", env_var="VOICELOAD_JUNIT", help="JUnit XML for thresholds")
    g.add_argument("--voiceload-prices", default="", env_var="VOICELOAD_PRICES",
                   help="price table YAML for the start-up cost estimate (default: harness/prices.yaml)")
    g.add_argument("--voiceload-max-cost", type=float, default=None, env_var="VOICELOAD_MAX_COST",
                   help="refuse to start (exit 2) if the estimated cost is above this many US dollars")


def _load(environment) -> None:
    opts = environment.parsed_options
    if NODE.scenario is not None and NODE.scenario.file == opts.scenario:
        return
    try:
        NODE.scenario = load_scenario(opts.scenario)
    except ScenarioError as exc:
        log.error("invalid scenario\n%s", exc)
        sys.exit(EXIT_USAGE)
    from harness.tts.prepare import SpeechError, prepare_speech

    try:  # say: lines: synthesised (or read from the cache) before this process starts any session
        prepare_speech(NODE.scenario, progress=sys.stderr)
    except SpeechError as exc:
        log.error("%s", auth.redact(str(exc)))
        sys.exit(EXIT_USAGE)
    lo, hi = NODE.scenario.load.think_time_s
    VoiceUser.wait_time = between(lo, hi)


@events.init.add_listener
def _init(environment, **_kw) -> None:
    auth.install_log_redaction()
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        NODE.link = coord.WorkerLink(runner)
        coord.register(runner, lambda: None, NODE.link)
        return  # options (the scenario path) arrive with the first spawn message
    _load(environment)
    opts = environment.parsed_options
    load = NODE.scenario.load
    if not _explicit("--stop-timeout"):  # let sessions in flight finish their turns when users stop
        environment.stop_timeout = opts.stop_timeout = load.stop_timeout_s
    if load.shape.type == "flat" and not opts.headless:
        environment.shape_class = None  # the web UI form's users, spawn rate and run time rule
    apply_defaults(environment, NODE.scenario, peak_users(make_plan(load)))
    if environment.web_ui is not None:
        install_web_ui(environment)
    if opts.headless:  # our shape ends the run through runner.stop(), so workers' last records arrive
        NODE.run_time, opts.run_time = opts.run_time, None
        _on_signals()
    NODE.estimate = _estimate(opts, opts.run_time or NODE.run_time)
    from harness.rundir import OutputError, RunOutput

    try:
        NODE.first_output = RunOutput(NODE.scenario, out_dir=opts.voiceload_out or None,
                                      extra={"runner": type(runner).__name__})
    except OutputError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_USAGE)
    log.info("voiceload: scenario %s, records in %s", NODE.scenario.name, NODE.first_output.dir)
    if isinstance(runner, MasterRunner):
        coord.register(runner, lambda: NODE.test.coord if NODE.test is not None else None, None)


def _estimate(opts, duration):
    """The plan's estimate at start (harness/plan.py); exit 2 above --voiceload-max-cost."""
    from harness.plan import PriceError, format_plan, load_prices, plan_scenario
    from harness.schema import parse_duration

    try:
        sp = plan_scenario(NODE.scenario, prices=load_prices(opts.voiceload_prices or None), users=opts.num_users,
                           spawn_rate=opts.spawn_rate, duration_s=parse_duration(duration) if duration else None,
                           profile=opts.voiceload_profile or None, override_url=opts.voiceload_target or None)
    except (PriceError, ValueError) as exc:
        log.error("voiceload: %s", exc)
        sys.exit(EXIT_USAGE)
    log.info("voiceload plan:\n%s", format_plan(sp))
    if opts.voiceload_max_cost is not None and sp.cost_usd > opts.voiceload_max_cost:
        log.error("voiceload: refusing to start: the estimated cost $%.2f is above --voiceload-max-cost $%.2f",
                  sp.cost_usd, opts.voiceload_max_cost)
        sys.exit(EXIT_USAGE)
    return sp


def _on_signals() -> None:
    """Headless: SIGINT/SIGTERM end the test as *interrupted* (exit 3, report still written). Locust
    installs its SIGTERM handler only after a shaped headless run, so the signal would kill it outright."""
    import signal

    def handler(name: str) -> None:  # the shape ends the test at its next tick, the normal way
        if NODE.interrupted is None:
            NODE.interrupted = name
            log.warning("voiceload: %s: stopping; the report is written and the run is incomplete", name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, handler, sig.name)


def _explicit(*flags: str) -> bool:
    return any(a == f or a.startswith(f + "=") for a in sys.argv for f in flags)


def _begin(environment) -> LocustRun:
    """The running test on the master / local runner, made at its start (a shape ticks before test_start)."""
    run = NODE.test
    if run is not None and not run.ended:
        return run
    from harness.rundir import OutputError, RunOutput

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
            from harness.plan import plan_dict

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
    from harness.arrivals import ArrivalSpec
    from harness.client.endpoints import resource_limits

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


def _current(environment) -> LocustRun:
    """The test a new user belongs to; a worker makes its own at test start (options arrive then)."""
    run = NODE.test
    if isinstance(environment.runner, WorkerRunner):
        run_id = getattr(environment.parsed_options, "voiceload_run_id", "")
        if run is None or run.ended or run.run_id != run_id:
            _load(environment)
            run = NODE.test = LocustRun(NODE.scenario, run_id)
            run.link = NODE.link
        return run
    return _begin(environment)


class VoiceUser(User):
    """One synthetic caller; each task is one complete session of the scenario's conversation."""

    wait_time = between(0, 0)
    _failures = 0
    run: LocustRun

    def on_start(self) -> None:
        self.run = _current(self.environment)  # this user's records go to its own test, never the next one
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
        """A slot of the resource's connection budget; the wait shows as a QUOTA row, not a failure."""
        run = self.run
        slot = run.link.gate(endpoint, lambda: run.stopping)
        if slot is not None and endpoint.limits.connections_per_minute is not None:
            self.environment.events.request.fire(
                request_type="QUOTA", name=f"{run.scenario.name}:wait for connection budget",
                response_time=slot.waited_s * 1000, response_length=0, exception=None)
        return slot

    def _turn(self, rec: TurnRecord) -> None:
        fire = self.environment.events.request.fire
        sc = self.run.scenario
        suffix = f"@{rec.target}" if len(sc.targets) > 1 else ""
        elapsed = rec.first_audio_ms
        if elapsed is None:
            elapsed = max((v for v in rec.marks.values()), default=0.0)
        if rec.throttle:  # the quota's doing, not the agent's: its own row, never a TURN failure
            fire(request_type="THROTTLED", name=f"{sc.name}:{rec.throttle}{suffix}", response_time=max(0.0, elapsed),
                 response_length=0, exception=None, context={"reason": rec.reason})
        else:
            fire(request_type="TURN", name=f"{sc.name}:turn{suffix}", response_time=max(0.0, elapsed),
                 response_length=rec.audio_bytes, exception=None if rec.complete else TurnFailed(rec.reason),
                 context={"reason": rec.reason})
        if rec.vad_ms is not None:
            fire(request_type="VAD", name=f"{sc.name}:vad{suffix}", response_time=max(0.0, rec.vad_ms),
                 response_length=0, exception=None)
        if rec.first_transcript_ms is not None:
            fire(request_type="TRANSCRIPT", name=f"{sc.name}:transcript{suffix}",
                 response_time=max(0.0, rec.first_transcript_ms), response_length=0, exception=None)
        self.run.record("turn", rec.to_dict())

    def _session(self, rec: SessionRecord) -> None:
        sc = self.run.scenario
        fire = self.environment.events.request.fire
        if rec.outcome == "rejected" and rec.http_status == 429 and rec.throttled:
            # refused by the resource's quota or capacity: its own row, not a failure of the agent
            fire(request_type="THROTTLED", name=f"{sc.name}:connect {rec.throttled}", response_time=rec.backoff_ms,
                 response_length=0, exception=None)
        elif not (rec.outcome == "aborted" and rec.error == BUDGET_ABORT):  # still waiting for budget at stop
            exc = None if rec.outcome == "ok" else SessionFailed(
                f"{rec.outcome}" + (f" HTTP {rec.http_status}" if rec.http_status else ""))
            fire(request_type="CONNECT", name=f"{sc.name}:connect", response_time=rec.connect_ms or 0.0,
                 response_length=0, exception=exc)
        self.run.record("session", rec.to_dict())


class TurnFailed(Exception):
    """A turn that did not complete; the message is the reason from the closed set."""


class SessionFailed(Exception):
    """A session that could not start (rejected handshake, connect error) or ended badly."""


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
    run = _current(environment)
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
    NODE.exit_code = code
    log.info("voiceload: test %d finished with exit code %d (%s)", NODE.tests, code, MEANING[code])


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
        run = _begin(self.runner.environment)
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
