"""A Locust process's start: voiceload's options, the scenario, the plan's estimate and signals.

Importing this module registers the listeners (``init_command_line_parser``, ``init``); the
locustfile imports it. A bad scenario, output directory or a cost above --voiceload-max-cost exits 2
before any load starts.
"""

from __future__ import annotations

import logging
import sys

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from . import redaction
from . import locust_coord as coord
from .exitcodes import EXIT_USAGE
from .locust_node import NODE, load
from .locust_ports import announce_master, announce_web_ui
from .locust_ui import apply_defaults, install_web_ui
from .shapes import make_plan, peak_users

log = logging.getLogger("voiceload")


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


@events.init.add_listener
def _init(environment, **_kw) -> None:
    redaction.install_log_redaction()
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        NODE.link = coord.WorkerLink(runner)
        coord.register(runner, lambda: None, NODE.link)
        return  # options (the scenario path) arrive with the first spawn message
    load(environment)
    opts = environment.parsed_options
    sc_load = NODE.scenario.load
    if not _explicit("--stop-timeout"):  # let sessions in flight finish their turns when users stop
        environment.stop_timeout = opts.stop_timeout = sc_load.stop_timeout_s
    if sc_load.shape.type == "flat" and not opts.headless:
        environment.shape_class = None  # the web UI form's users, spawn rate and run time rule
    apply_defaults(environment, NODE.scenario, peak_users(make_plan(sc_load)))
    if environment.web_ui is not None:
        install_web_ui(environment)
        announce_web_ui(environment.web_ui)
    if opts.headless:  # our shape ends the run through runner.stop(), so workers' last records arrive
        NODE.run_time, opts.run_time = opts.run_time, None
        _on_signals()
    NODE.estimate = _estimate(opts, opts.run_time or NODE.run_time)
    from .rundir import OutputError, RunOutput

    try:
        NODE.first_output = RunOutput(NODE.scenario, out_dir=opts.voiceload_out or None,
                                      extra={"runner": type(runner).__name__})
    except OutputError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_USAGE)
    log.info("voiceload: scenario %s, records in %s", NODE.scenario.name, NODE.first_output.dir)
    if isinstance(runner, MasterRunner):
        announce_master(runner, opts.master_bind_host)
        coord.register(runner, lambda: NODE.test.coord if NODE.test is not None else None, None)


def _estimate(opts, duration):
    """The plan's estimate at start (harness/plan.py); exit 2 above --voiceload-max-cost."""
    from .plan import PriceError, format_plan, load_prices, plan_scenario
    from .schema import parse_duration

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
