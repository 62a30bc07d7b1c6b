"""voiceload for Locust: ``locust -f harness/locustfile.py --scenario scenarios/smoke.yaml``.

One task = one caller session through the engine. Each turn fires a few low-cardinality request
events (TURN = first audio, VAD, TRANSCRIPT; CONNECT per session) so Locust's UI, --csv and --html
show them; exact per-turn records go to reports/<run-id>/turns.jsonl — from workers to the master
piggybacked on Locust's stats reports — and our report and threshold gate are computed from those,
never from Locust's rounded stats. The load shape ends with a drain so no worker record is lost.
"""

from __future__ import annotations

import logging
import os

import gevent
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

if __package__ in (None, ""):  # run as a file by locust -f: make the harness package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locust import LoadTestShape, User, between, events, task  # noqa: E402  (locust patches gevent first)
from locust.runners import MasterRunner, WorkerRunner  # noqa: E402

from harness import auth  # noqa: E402
from harness import locust_coord as coord  # noqa: E402
from harness.client.endpoints import open_endpoints  # noqa: E402
from harness.client.gcmode import realtime_gc  # noqa: E402
from harness.client.runner import MAX_USER_BACKOFF_S  # noqa: E402
from harness.client.session import BUDGET_ABORT, CallerSession, SessionOptions, prepare  # noqa: E402
from harness.records import SessionRecord, TurnRecord  # noqa: E402
from harness.scenario import ScenarioError, load_scenario  # noqa: E402
from harness.shapes import StepWindow, make_plan  # noqa: E402

log = logging.getLogger("voiceload")
BREACH_EXIT_CODE = 3
WORKER_ACTIVE_STALE_S = 10.0  # a worker silent this long (gone, or stopped) no longer counts


class _State:
    """Per-process run state; workers build theirs lazily because options reach them at test start."""

    def __init__(self) -> None:
        self.scenario = None
        self.endpoints: list = []
        self.stack = ExitStack()
        self.output = None  # RunOutput on the master / local runner
        self.plan = None
        self.pending_turns: list[dict] = []
        self.pending_sessions: list[dict] = []
        self.sessions_started = 0
        self.turns_produced = 0
        self.sessions_produced = 0
        self.active = 0
        self.stopping = False
        self.lock = threading.Lock()
        self.workers_seen: set[str] = set()
        self.workers_missing: set[str] = set()
        self.release_gc = None  # gcmode.realtime_gc's release while a test runs on this node
        self.worker_active: dict[str, tuple[int, float]] = {}  # master: worker -> (live sessions, when)
        self.window = None  # shapes.StepWindow: the current breakpoint step's turns (master / local)
        self.coord = None  # locust_coord.Coordinator of the current test (master / local)
        self.link = None  # how users get connection budget and arrivals (LocalLink / WorkerLink)
        self.estimate = None  # plan.ScenarioPlan printed at start (master / local)


STATE = _State()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    g = parser.add_argument_group("voiceload", "Voice agent load test options")
    g.add_argument("--scenario", default="scenarios/smoke.yaml", env_var="VOICELOAD_SCENARIO",
                   help="scenario YAML (also from locust.conf or VOICELOAD_SCENARIO)")
    g.add_argument("--voiceload-out", default="", env_var="VOICELOAD_OUT", help="output directory for records/report")
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
    try:
        STATE.scenario = load_scenario(opts.scenario)
    except ScenarioError as exc:
        log.error("invalid scenario\n%s", exc)
        sys.exit(2)
    from harness.tts.prepare import SpeechError, prepare_speech

    try:  # say: lines: synthesised (or read from the cache) before this process starts any session
        prepare_speech(STATE.scenario, progress=sys.stderr)
    except SpeechError as exc:
        log.error("%s", auth.redact(str(exc)))
        sys.exit(2)
    lo, hi = STATE.scenario.load.think_time_s
    VoiceUser.wait_time = between(lo, hi)


@events.init.add_listener
def _init(environment, **_kw) -> None:
    auth.install_log_redaction()
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        STATE.link = coord.WorkerLink(runner)
        coord.register(runner, lambda: None, STATE.link)
        return  # options (the scenario path) arrive with the first spawn message
    _load(environment)
    opts = environment.parsed_options
    duration = opts.run_time or None
    opts.run_time = None  # our shape ends the run after a drain; Locust's timer would cut the drain
    if not _explicit("--stop-timeout"):  # let sessions in flight finish their turns when users stop
        environment.stop_timeout = opts.stop_timeout = STATE.scenario.load.stop_timeout_s
    drain = environment.stop_timeout + (3.0 + 2.0 if isinstance(runner, MasterRunner) else 1.0)
    STATE.plan = make_plan(STATE.scenario.load, users=opts.num_users, spawn_rate=opts.spawn_rate,
                           duration_s=duration, drain_s=drain)
    STATE.estimate = _estimate(opts, duration)
    from harness.rundir import OutputError, RunOutput

    try:
        STATE.output = RunOutput(STATE.scenario, out_dir=opts.voiceload_out or None,
                                 extra={"runner": type(runner).__name__})
    except OutputError as exc:
        log.error("%s", exc)
        sys.exit(2)
    log.info("voiceload: scenario %s, records in %s", STATE.scenario.name, STATE.output.dir)

    def _write_failed(message: str) -> None:  # e.g. the disk filled up: stop rather than lose records silently
        log.error("voiceload: cannot write records (%s); stopping the run", message)
        environment.process_exit_code = 2
        gevent.spawn(runner.quit)

    STATE.output.on_write_error = _write_failed
    if isinstance(runner, MasterRunner):
        runner.register_message("voiceload_flush", lambda env, msg: _receive(msg.node_id, msg.data))
        coord.register(runner, lambda: STATE.coord, None)
    if STATE.estimate is not None:
        from harness.plan import plan_dict

        STATE.output.meta["plan"] = plan_dict(STATE.estimate)


def _estimate(opts, duration):
    """The plan's estimate at start (harness/plan.py); exit 2 above --voiceload-max-cost."""
    from harness.plan import PriceError, format_plan, load_prices, plan_scenario
    from harness.schema import parse_duration

    try:
        sp = plan_scenario(STATE.scenario, prices=load_prices(opts.voiceload_prices or None), users=opts.num_users,
                           spawn_rate=opts.spawn_rate, duration_s=parse_duration(duration) if duration else None,
                           profile=opts.voiceload_profile or None, override_url=opts.voiceload_target or None)
    except (PriceError, ValueError) as exc:
        log.error("voiceload: %s", exc)
        sys.exit(2)
    log.info("voiceload plan:\n%s", format_plan(sp))
    if opts.voiceload_max_cost is not None and sp.cost_usd > opts.voiceload_max_cost:
        log.error("voiceload: refusing to start: the estimated cost $%.2f is above --voiceload-max-cost $%.2f",
                  sp.cost_usd, opts.voiceload_max_cost)
        sys.exit(2)
    return sp


def _explicit(*flags: str) -> bool:
    return any(a == f or a.startswith(f + "=") for a in sys.argv for f in flags)


def _ensure_endpoints(environment) -> None:
    with STATE.lock:
        if STATE.endpoints:
            return
        if STATE.scenario is None:
            _load(environment)
        prepare(STATE.scenario)
        opts = environment.parsed_options
        run_dir = STATE.output.dir if STATE.output else None
        STATE.endpoints = STATE.stack.enter_context(open_endpoints(
            STATE.scenario, run_dir=run_dir, override_url=opts.voiceload_target or None,
            profile=opts.voiceload_profile or None))
        if STATE.output is not None:
            STATE.output.meta["targets"] = [{"name": e.name, "url": auth.redact(e.display)} for e in STATE.endpoints]


class VoiceUser(User):
    """One synthetic caller; each task is one complete session of the scenario's conversation."""

    wait_time = between(0, 0)
    _failures = 0

    def on_start(self) -> None:
        _ensure_endpoints(self.environment)

    @task
    def call(self) -> None:
        sc = STATE.scenario
        n = STATE.sessions_started
        pick = n
        if sc.load.shape.type == "arrivals":  # open loop: this line takes the next caller on the schedule
            arrival = STATE.link.next_arrival(lambda: STATE.stopping) if STATE.link is not None else None
            if arrival is None:
                gevent.sleep(1.0)  # the schedule is spent: the line stays idle until the shape stops
                return
            pick, delay = arrival
            if delay > 0:
                gevent.sleep(delay)
        STATE.sessions_started += 1
        endpoint = STATE.endpoints[pick % len(STATE.endpoints)]
        worker = getattr(self.environment.runner, "client_id", None) or "local"
        opts = SessionOptions(run_id=STATE.output.run_id if STATE.output else "", worker=worker,
                              session_id=f"{worker}-{n}", seed=n, on_record=self._turn,
                              active_sessions=lambda: STATE.active, stopping=lambda: STATE.stopping,
                              recording_dir=_recording_dir(self.environment),
                              connect_gate=self._gate if STATE.link is not None else None)
        session = CallerSession(sc, endpoint, opts)
        STATE.active += 1
        try:
            session.run()
        finally:  # also when Locust kills the user at stop-timeout: the session record is never lost
            STATE.active -= 1
            self._session(session.record)
        rec = session.record
        self._failures = self._failures + 1 if rec.turns_attempted == 0 and rec.outcome != "ok" else 0
        if rec.retry_after_s:  # throttled: back off as long as the service asked
            gevent.sleep(min(rec.retry_after_s, MAX_USER_BACKOFF_S * 3))
        elif self._failures:  # a target that refuses us is not hammered in a tight loop
            gevent.sleep(min(MAX_USER_BACKOFF_S, 2.0 ** (self._failures - 1)))

    def _gate(self, endpoint):
        """A slot of the resource's connection budget; the wait shows as a QUOTA row, not a failure."""
        slot = STATE.link.gate(endpoint, lambda: STATE.stopping)
        if slot is not None and endpoint.limits.connections_per_minute is not None:
            self.environment.events.request.fire(
                request_type="QUOTA", name=f"{STATE.scenario.name}:wait for connection budget",
                response_time=slot.waited_s * 1000, response_length=0, exception=None)
        return slot

    def _turn(self, rec: TurnRecord) -> None:
        fire = self.environment.events.request.fire
        sc = STATE.scenario
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
        _record("turn", rec.to_dict())

    def _session(self, rec: SessionRecord) -> None:
        sc = STATE.scenario
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
        _record("session", rec.to_dict())


def _recording_dir(environment) -> str | None:
    """Local runs record next to the records; workers only when given their own --voiceload-out."""
    if STATE.output is not None:
        return str(STATE.output.dir / "recordings")
    out = environment.parsed_options.voiceload_out
    return f"{out}/recordings" if out else None


class TurnFailed(Exception):
    """A turn that did not complete; the message is the reason from the closed set."""


class SessionFailed(Exception):
    """A session that could not start (rejected handshake, connect error) or ended badly."""


def _record(kind: str, data: dict) -> None:
    if kind == "turn":
        STATE.turns_produced += 1
    else:
        STATE.sessions_produced += 1
    if STATE.output is not None:  # local runner: straight to disk
        (_add_turn if kind == "turn" else STATE.output.add_session)(data)
    else:  # worker: ship with the next stats report
        (STATE.pending_turns if kind == "turn" else STATE.pending_sessions).append(data)


def _add_turn(data: dict) -> None:
    """A turn record reaches the run (local runner or master): to disk, and to the breakpoint step."""
    STATE.output.add_turn(data)
    if STATE.window is not None:
        STATE.window.add(data)


@events.report_to_master.add_listener
def _report_to_master(client_id, data, **_kw) -> None:
    # Every report carries this worker's live session count, records or not: the master needs all
    # workers' counts to stamp turns with the run's concurrency.
    data["voiceload"] = {"turns": STATE.pending_turns, "sessions": STATE.pending_sessions, "active": STATE.active}
    STATE.pending_turns, STATE.pending_sessions = [], []


@events.worker_report.add_listener
def _worker_report(client_id, data, **_kw) -> None:
    _receive(client_id, data.get("voiceload"))


def _receive(client_id: str, payload) -> None:
    STATE.workers_seen.add(client_id)
    if not payload or STATE.output is None:
        return
    now = time.monotonic()
    others = sum(n for w, (n, at) in STATE.worker_active.items()
                 if w != client_id and now - at < WORKER_ACTIVE_STALE_S)
    for t in payload.get("turns", []):
        # A worker only knows its own sessions; the run's concurrency at this turn is its count then
        # plus the other workers' latest (reported every few seconds: an estimate at that resolution).
        if isinstance(t.get("active_sessions"), int):
            t["active_sessions"] += others
        _add_turn(t)
    for s in payload.get("sessions", []):
        STATE.output.add_session(s)
    if isinstance(payload.get("active"), int):
        STATE.worker_active[client_id] = (payload["active"], now)


@events.test_start.add_listener
def _test_start(environment, **_kw) -> None:
    if STATE.plan is not None:  # master / local: the shape's clock starts now (not at init: web UI)
        STATE.window = StepWindow(STATE.plan, time.time())
        from harness.arrivals import ArrivalSpec

        runner = environment.runner
        if STATE.coord is not None:
            STATE.coord.close()
        from harness.client.endpoints import resource_limits

        opts = environment.parsed_options
        arrivals = ArrivalSpec.from_plan(STATE.plan) if STATE.plan.kind == "arrivals" else None
        resources = resource_limits(STATE.scenario, opts.voiceload_profile or None, opts.voiceload_target or None)
        STATE.coord = coord.Coordinator(resources, arrivals, runner if isinstance(runner, MasterRunner) else None)
        if not isinstance(runner, MasterRunner):
            STATE.link = coord.LocalLink(STATE.coord)
    if not isinstance(environment.runner, MasterRunner) and STATE.release_gc is None:
        STATE.release_gc = realtime_gc()  # nodes that run users: no collector pause under every session


@events.test_stopping.add_listener
def _stopping(environment, **_kw) -> None:
    STATE.stopping = True


@events.test_stop.add_listener
def _test_stop(environment, **_kw) -> None:  # fired once the users have stopped
    if STATE.release_gc is not None:
        STATE.release_gc()
        STATE.release_gc = None


@events.quitting.add_listener
def _quitting(environment, **_kw) -> None:
    runner = environment.runner
    STATE.stopping = True
    if isinstance(runner, WorkerRunner):
        log.info("voiceload worker %s: %d turn records and %d session records produced, %d not yet shipped",
                 runner.client_id, STATE.turns_produced, STATE.sessions_produced,
                 len(STATE.pending_turns) + len(STATE.pending_sessions))
    if isinstance(runner, MasterRunner):
        missing = sorted(c.id for c in runner.clients.missing)
        for wid in missing:
            STATE.output.note(f"worker {wid} went missing during the run; its records up to its last report "
                              f"are kept, turns it ran after that are lost")
        STATE.output.meta["workers"] = {"seen": sorted(STATE.workers_seen), "missing": missing}
    STATE.stack.close()  # stop embedded simulators
    if STATE.output is None:
        return
    if STATE.coord is not None and STATE.coord.resources:  # how the connection quota shaped the run
        STATE.output.meta["quota"] = STATE.coord.summary()
    from harness.quota import note_reconnects

    note_reconnects(STATE.output)
    if STATE.plan is not None and STATE.plan.breakpoint:
        STATE.output.meta["breakpoint"] = STATE.plan.breakpoint
    paths = STATE.output.finish()
    log.info("voiceload report: %s", paths.get("report.html"))
    if STATE.scenario.thresholds:
        from harness.report.check import run_check

        junit = environment.parsed_options.voiceload_junit or None
        rc = run_check(STATE.output.dir, STATE.scenario.thresholds, junit)
        if not getattr(STATE.output, "write_error", None):  # a lost-records exit (2) must not turn green
            environment.process_exit_code = BREACH_EXIT_CODE if rc else 0


class VoiceloadShape(LoadTestShape):
    """The scenario's load shape (flat, step, spike, soak, breakpoint), always ending with a drain.

    The drain ends early once no user is left: at once on a local runner, after one more worker
    report interval (plus margin) on a master, so the workers' last records have arrived.
    """

    _idle_since: float | None = None

    def tick(self):
        if STATE.plan is None:
            return None
        t = self.get_run_time()
        want = STATE.plan.tick(t, STATE.window)
        if want is None or want[0] > 0:
            self._idle_since = None
            return want
        if self.runner.user_count == 0 and STATE.active == 0:
            self._idle_since = self._idle_since if self._idle_since is not None else t
            grace = 3.0 + 2.0 if isinstance(self.runner, MasterRunner) else 0.0
            if t - self._idle_since >= grace:
                return None
        return want


os.environ.setdefault("VOICELOAD_IN_LOCUST", "1")
