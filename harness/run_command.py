"""``voiceload run``: one scenario, headless, to a run directory with a report and a verdict.

Apart from cli.py because it is the one command with a life cycle of its own (signals, gevent's
monkey-patching before any socket, the runner, the cost guard and the verdict); ``validate`` and
``plan`` reuse its target and cost helpers. Heavy imports stay inside the functions, as in cli.py.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .exitcodes import EXIT_OK, EXIT_USAGE


def cmd_run(args: argparse.Namespace) -> int:
    from . import interrupts

    # SIGINT/SIGTERM until the runner's own handlers: exit 3 ("interrupted"), never a kill without a
    # verdict, never a signal lost in a start-up step (harness/interrupts.py). cli.main installs them first.
    signals = interrupts.install()
    from gevent import monkey

    monkey.patch_all()
    signals.interrupt_waits()
    signals.check()
    from .scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"error: invalid scenario\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    from .tts.commands import prepare_for_run  # say: lines are synthesised here, before any load

    signals.check()
    rc = prepare_for_run(scenario, quiet=args.quiet)
    if rc is not None:
        return rc
    return run_scenario(scenario, args, signals)


def run_scenario(scenario: Any, args: argparse.Namespace, signals: Any = None) -> int:
    from . import interrupts, redaction
    from .client.endpoints import open_endpoints
    from .client.runner import LoadRunner
    from .rundir import OutputError, RunOutput
    from .schema import parse_duration
    from .shapes import make_plan

    signals = signals or interrupts.RunSignals()  # not installed (tests calling this directly): never signalled
    redaction.install_log_redaction()
    try:
        duration = parse_duration(args.duration) if args.duration else None
    except ValueError as exc:
        print(f"error: --duration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problems = _override_problems(args, duration)
    try:
        warnings = target_warnings(scenario, args.target)
    except ValueError as exc:  # --target URL refused (bad scheme, secret in the URL...)
        problems.append(str(exc))
        warnings = []
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not problems:
        problems = _credential_problems(scenario, args.target)
    if problems:
        for p in problems:
            print(f"error: {redaction.redact(p)}", file=sys.stderr)
        return EXIT_USAGE
    code, estimate = cost_guard(scenario, args, duration)
    if code:
        return code
    plan = make_plan(scenario.load, users=args.users, spawn_rate=args.spawn_rate, duration_s=duration)
    out = None
    try:
        with signals.held():  # the run directory whole and run.json saved before a signal can end the run
            out = RunOutput(scenario, out_dir=args.out)
            from .plan import plan_dict

            out.meta["plan"] = plan_dict(estimate)
            out.meta["load"] = _effective_load(scenario, plan, args)
            out.meta["scenario_load"] = _scenario_load(scenario)
            out.meta["allow_expectation_failures"] = bool(args.allow_expectation_failures)
            out.meta["status"] = "running"
            if getattr(scenario.speech, "prepared", None):  # say: lines: what was synthesised or cached (harness/tts)
                out.meta["speech"] = scenario.speech.prepared
            out.save_meta()  # a run killed from here on (SIGKILL, power) is judged "did not finish", never PASS
        progress = None if args.quiet else sys.stderr
        signals.check()
        with open_endpoints(scenario, run_dir=out.dir, override_url=args.target, profile=args.profile,
                            seed=args.seed, sim_tls=getattr(args, "simulator_tls", False)) as endpoints:
            signals.check()
            out.meta["targets"] = [{"name": e.name, "url": redaction.redact(e.display)} for e in endpoints]
            print(f"voiceload: run {out.run_id} → {out.dir}", file=sys.stderr)
            runner = LoadRunner(scenario, endpoints, plan, on_turn=out.add_turn, on_session=out.add_session,
                                run_id=out.run_id, sessions_per_user=args.sessions_per_user,
                                kernel_stamps=args.kernel_timestamps, progress=progress, seed=args.seed or 0,
                                recording_dir=str(out.dir / "recordings"),
                                early_signal=lambda: signals.received)
            out.on_write_error = lambda _msg: runner.stop()  # disk full mid-run: stop, keep what is on disk
            signals.check()
            signals.hand_over()  # a signal from here on: the runner stops the load (early_signal if before its handlers)
            summary = runner.run()
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # a signal while targets start, before the runner handles signals itself
        import datetime as dt

        signals.hand_over()  # a second signal must not break the report the first one asked for
        if out is None:  # before the run directory: nothing to report (cli.main: exit 3, "interrupted")
            raise
        name = getattr(exc, "signal", "SIGINT")
        at = (signals.received or {}).get("at") or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        out.meta.update(status="interrupted", interrupted={"signal": name, "at": at})
        out.note(f"interrupted by {name} while the run was starting")
        paths = out.finish(self_check={})
        print(f"report: {paths.get('report.html', out.dir / 'report.html')}")
        return print_verdict(out.dir, None, args.junit, args.allow_expectation_failures, output=out)
    except Exception as exc:
        signals.hand_over()
        if out is None:
            raise
        out.note(f"run aborted: {type(exc).__name__}: {exc}")
        out.meta["status"] = "aborted"
        out.meta["abort_reason"] = redaction.redact(f"{type(exc).__name__}: {exc}")
        out.finish(self_check={})
        print(f"error: {redaction.redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    if summary.get("breakpoint"):
        out.meta["breakpoint"] = summary["breakpoint"]
    if runner.budgets.by_resource:  # how the connection quota shaped the run (harness/quota.py)
        out.meta["quota"] = runner.budgets.summary()
    from .quota import note_reconnects

    note_reconnects(out)
    _record_status(out, runner)
    paths = out.finish(self_check=self_check(runner))
    if out.write_error is not None:
        print(f"error: {out.write_error}; the run was stopped early: {out.turns.count} turn and "
              f"{out.sessions.count} session records are on disk, {out.lost['turns']} turn and "
              f"{out.lost['sessions']} session records were lost", file=sys.stderr)
        return EXIT_USAGE
    print(f"report: {paths.get('report.html', out.dir / 'report.html')}")
    return print_verdict(out.dir, None, args.junit, args.allow_expectation_failures, output=out)


def _effective_load(scenario: Any, plan: Any, args: argparse.Namespace) -> dict[str, Any]:
    """What actually runs, after command-line overrides (run.json ``load``); the scenario's own is
    kept beside it as ``scenario_load``."""
    from .shapes import peak_users

    spu = args.sessions_per_user if args.sessions_per_user is not None else scenario.load.sessions_per_user
    return {"users": plan.users, "peak_users": peak_users(plan), "spawn_rate": plan.spawn_rate,
            "duration_s": plan.duration_s, "sessions_per_user": spu, "shape": plan.kind, **plan.params,
            "overridden": [f for f, v in (("users", args.users), ("spawn_rate", args.spawn_rate),
                                          ("duration", args.duration), ("sessions_per_user", args.sessions_per_user))
                           if v is not None]}


def _scenario_load(scenario: Any) -> dict[str, Any]:
    ld = scenario.load
    return {"users": ld.users, "spawn_rate": ld.spawn_rate, "duration_s": ld.duration_s,
            "sessions_per_user": ld.sessions_per_user, "shape": ld.shape.type, **ld.shape.params}


def _record_status(out: Any, runner: Any) -> None:
    """run.json ``status``: complete, interrupted (signal, when) or aborted (why) — the verdict reads it."""
    if runner.interrupted:
        out.meta.update(status="interrupted", interrupted=runner.interrupted)
        out.note(f"interrupted by {runner.interrupted['signal']} at {runner.interrupted['at']}: the run is "
                 f"incomplete; records up to then are kept")
    elif runner.abort_reason:
        out.meta.update(status="aborted", abort_reason=runner.abort_reason)
        out.note(f"aborted: {runner.abort_reason}")
    else:
        out.meta["status"] = "complete"


def print_verdict(run_dir: Any, thresholds: list[str] | None, junit: str | None, allow_expectation_failures: bool,
             output: Any = None) -> int:
    """Judge a run (report/verdict.py), print the thresholds table and, last, the verdict line."""
    from .report.check import format_table, write_junit
    from .report.verdict import judge

    try:
        v = judge(run_dir, thresholds=thresholds, allow_expectation_failures=allow_expectation_failures)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if v.thresholds:
        print(format_table(v.thresholds))
    if junit:
        write_junit(v.thresholds, junit)
    if output is not None:
        output.meta["verdict"] = v.to_dict()
        output.save_meta()
    print(v.line(), flush=True)
    return v.exit_code


def self_check(runner: Any) -> dict[str, Any]:
    """What the generator says about its own honesty, for run.json and the report banner."""
    from .client import transport

    late, stamps = runner.lateness, runner.stamp_delays
    worst = runner.worst_session_late_p99_ms
    out: dict[str, Any] = {
        **late.summary("pacing_late"),
        "pacing_late_p99_worst_session_ms": None if worst is None else round(worst, 3),
        "frames_sent": late.n,
        "invalid_turns": runner.stats.invalid,
        "sessions": runner.stats.sessions,
        # events are stamped with the kernel's arrival instant on plain ws://, else after the read
        "event_stamp": transport.EVENT_STAMP if stamps.n else "user",
    }
    if stamps.n:  # how much scheduling delay a user-space stamp would carry: the load on this process
        out.update(stamp_reads=stamps.n, **stamps.summary("stamp_delay"))
    return out


def _targets(scenario: Any, override: str | None) -> list[Any]:
    """The real (non-embedded) targets a run will connect to; ValueError for a bad --target URL."""
    from .protocol import endpoint as ep

    return [ep.parse_target_url(override)] if override else [t.target for t in scenario.targets if t.target]


def target_warnings(scenario: Any, override: str | None) -> list[str]:
    """Each warning names its target, so a scenario with several targets says which one is meant."""
    from .scenario import session_warnings

    return [f"target {t.name!r}: {w}" for t in _targets(scenario, override) for w in t.warnings()] + \
        session_warnings(scenario)


def _override_problems(args: argparse.Namespace, duration: float | None) -> list[str]:
    """Command-line load overrides get the same bounds as the scenario's load section."""
    from .scenario import MAX_USERS

    checks = (("--users", args.users, 1, MAX_USERS, ""), ("--spawn-rate", args.spawn_rate, 0.01, 1000, "/s"),
              ("--duration", duration, 1, 7 * 24 * 3600, " s"),
              ("--sessions-per-user", args.sessions_per_user, 1, 1_000_000, ""))
    return [f"{flag}: must be between {lo:.15g}{unit} and {hi:.15g}{unit}, got {float(value):.15g}{unit}"
            for flag, value, lo, hi, unit in checks if value is not None and not lo <= value <= hi]


def _credential_problems(scenario: Any, override: str | None) -> list[str]:
    """Resolve every credential once before load starts: a missing variable (or `az login`) is refused
    here with exit 2, not discovered by every session of the run."""
    from . import auth

    out = []
    for t in _targets(scenario, override):
        try:
            auth.CredentialProvider(t.auth).check()
        except auth.AuthError as exc:
            out.append(f"target {t.name!r}: {exc}")
    return out


# -- plan / cost guard (harness/plan.py) -------------------------------------------------------------------
def cost_guard(scenario: Any, args: argparse.Namespace, duration: float | None, out: Any = sys.stderr) -> tuple[int, Any]:
    """Print the plan's estimate; (EXIT_USAGE, None) if it cannot be made or is above --max-cost."""
    from .plan import PriceError, format_plan, load_prices, plan_scenario

    try:
        sp = plan_scenario(scenario, prices=load_prices(args.prices), users=args.users, spawn_rate=args.spawn_rate,
                           duration_s=duration, profile=getattr(args, "profile", None),
                           override_url=getattr(args, "target", None))
    except (PriceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE, None
    print(format_plan(sp), file=out, flush=True)
    if args.max_cost is not None and sp.cost_usd > args.max_cost:
        print(f"error: refusing to start: the estimated cost ${sp.cost_usd:,.2f} is above --max-cost "
              f"${args.max_cost:,.2f} (estimate from {sp.prices.file}; reduce users or duration, or raise the "
              f"budget)", file=sys.stderr)
        return EXIT_USAGE, None
    return EXIT_OK, sp
