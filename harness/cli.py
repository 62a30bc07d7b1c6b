"""The ``voiceload`` command: run (in run_command.py), simulate, validate, plan, report, compare, check, fixtures.

Heavy imports happen inside each command so ``voiceload run`` can monkey-patch gevent before
anything opens a socket (azure-identity's token requests then cooperate with the callers).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .exitcodes import EXIT_BREACH, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, MEANING
from .run_command import cmd_run, cost_guard, print_verdict, target_warnings

EPILOG = "exit codes (every command; Locust uses the same):\n" + "\n".join(
    f"  {code}  {text}" for code, text in MEANING.items()) + (
    "\n  (expectations count unless --allow-expectation-failures; compare exits 1 on a significant "
    "regression only with --fail-on-regression)")


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    try:
        if args_in[:1] == ["run"]:  # before the parser's imports: a signal from here on exits 3 (harness/interrupts.py)
            from .interrupts import install

            install()
        return _command(args_in)
    except KeyboardInterrupt as exc:  # run: before the run directory exists (run_scenario reports the later ones)
        name = getattr(exc, "signal", "SIGINT")
        if args_in[:1] == ["run"]:  # the console still ends with the verdict line a CI job reads; no report
            print(f"VERDICT: INCOMPLETE — interrupted by {name} before the run started", flush=True)
        else:
            print(f"interrupted by {name}", file=sys.stderr)
        return EXIT_INCOMPLETE


def _command(args_in: list[str]) -> int:
    if args_in[:1] == ["simulate"]:  # argparse.REMAINDER in a subparser refuses leading --flags
        from .simulator.__main__ import main as simulate

        return simulate(args_in[1:])
    parser = _parser()
    args = parser.parse_args(args_in)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    return int(args.func(args) or 0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="voiceload", description="Load tests for real-time voice agents (Azure AI "
                                "Voice Live), with an embedded protocol-faithful simulator.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(metavar="COMMAND")

    r = sub.add_parser("run", help="run a scenario headless and write a report")
    r.add_argument("scenario")
    r.add_argument("--target", help="endpoint URL overriding the scenario's targets (wss://… or ws://127.0.0.1:PORT)")
    r.add_argument("--users", type=int, help="peak concurrent callers (default: scenario load.users)")
    r.add_argument("--spawn-rate", type=float, help="callers started per second")
    r.add_argument("--duration", help="run time, e.g. 60s, 5m (default: scenario load.duration)")
    r.add_argument("--sessions-per-user", type=int, help="stop each caller after N sessions")
    r.add_argument("--out", help="output directory (default reports/<run-id>)")
    r.add_argument("--profile", help="simulator profile for embedded targets (ideal, realistic, degraded, chaos)")
    r.add_argument("--seed", type=int, default=None, help="seed for the embedded simulator and perturbations")
    r.add_argument("--junit", help="write threshold results as JUnit XML")
    r.add_argument("--kernel-timestamps", action=argparse.BooleanOptionalAction, default=True,
                   help="stamp received events with the kernel's SO_TIMESTAMPNS arrival instant (default; ws:// and "
                        "wss:// alike) and report the user-space stamp delay")
    r.add_argument("--simulator-tls", action="store_true",
                   help="embedded simulators serve wss:// with a throw-away local CA that the callers trust")
    r.add_argument("--allow-expectation-failures", action="store_true",
                   help="failed expectations are reported but do not fail the run (exit 0 instead of 1)")
    r.add_argument("--quiet", action="store_true", help="no progress line")
    _cost_args(r)
    r.set_defaults(func=cmd_run)

    pl = sub.add_parser("plan", help="before any load: ramp time under the connection quota, peak sessions, "
                                     "tokens/min against the quota, audio minutes and estimated cost per target")
    pl.add_argument("scenarios", nargs="+")
    pl.add_argument("--target", help="endpoint URL overriding the scenario's targets")
    pl.add_argument("--users", type=int, help="peak concurrent callers (default: scenario load.users)")
    pl.add_argument("--spawn-rate", type=float, help="callers started per second")
    pl.add_argument("--duration", help="run time, e.g. 60s, 5m (default: scenario load.duration)")
    pl.add_argument("--profile", help="simulator profile for embedded targets")
    _cost_args(pl)
    pl.set_defaults(func=cmd_plan)

    from .simulator_cli import DESCRIPTION, add_arguments

    s = add_arguments(sub.add_parser("simulate", help="serve the Voice Live simulator", description=DESCRIPTION))
    s.set_defaults(func=cmd_simulate)

    v = sub.add_parser("validate", help="check scenario files (and optionally connect once per target)")
    v.add_argument("scenarios", nargs="+")
    v.add_argument("--connect", action="store_true", help="open one session per target and run one short turn")
    v.set_defaults(func=cmd_validate)

    rp = sub.add_parser("report", help="(re)build turns.csv, summary.csv and report.html of a run directory")
    rp.add_argument("run_dir")
    rp.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="compare runs (or the targets of one run) with bootstrap confidence")
    c.add_argument("run_dirs", nargs="+")
    c.add_argument("--out", help="output directory (default: reports/compare-<time>)")
    c.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 when a significant regression is found (3 when there is nothing to compare)")
    c.set_defaults(func=cmd_compare)

    k = sub.add_parser("check", help="judge a run (thresholds, expectations, completeness); exit 1 on breach")
    k.add_argument("run_dir")
    k.add_argument("--thresholds", help="YAML file with a 'thresholds:' list (default: the scenario's)")
    k.add_argument("--junit", help="write JUnit XML naming each breached metric")
    k.add_argument("--allow-expectation-failures", action="store_true",
                   help="failed expectations are reported but do not fail the check")
    k.set_defaults(func=cmd_check)

    f = sub.add_parser("fixtures", help="manage audio fixtures")
    fsub = f.add_subparsers(metavar="ACTION")
    fa = fsub.add_parser("add", help="convert an audio file to a 24 kHz mono PCM16 fixture and add it to the manifest")
    fa.add_argument("file")
    fa.add_argument("--text", required=True, help="what is said (used for WER and transcription)")
    fa.add_argument("--id", dest="fixture_id")
    fa.add_argument("--language", default="en-US")
    fa.add_argument("--use-case", default="custom")
    fa.add_argument("--dir", default="audio_fixtures")
    fa.set_defaults(func=cmd_fixtures_add)
    fl = fsub.add_parser("list", help="list fixtures: recorded, synthesised, and speech caches")
    fl.add_argument("--dir", default="audio_fixtures")
    fl.set_defaults(func=cmd_fixtures_list)

    from .cli_project import add_commands  # init, locustfile: a project outside the repository

    add_commands(sub)

    from .tts.commands import add_commands, add_list_options  # fixtures say; speech caches in list

    add_list_options(fl)
    add_commands(fsub)
    return p


# -- run -----------------------------------------------------------------------------------------------
def _cost_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prices", help="price table YAML (default: the one shipped in harness/prices.yaml)")
    p.add_argument("--max-cost", type=float, metavar="USD",
                   help="refuse to start (exit 2) if the estimated cost is above this many US dollars")


def _each_scenario(paths: list[str]) -> Any:
    """(path, Scenario) per file, or (path, None) after printing every problem of a bad one."""
    from .scenario import ScenarioError, load_scenario

    for path in paths:
        try:
            yield path, load_scenario(path)
        except ScenarioError as exc:
            print(f"✗ {exc}", file=sys.stderr)
            yield path, None


def cmd_plan(args: argparse.Namespace) -> int:
    from .schema import parse_duration

    try:
        duration = parse_duration(args.duration) if args.duration else None
    except ValueError as exc:
        print(f"error: --duration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rc, total = EXIT_OK, 0.0
    for path, sc in _each_scenario(args.scenarios):
        if sc is None:
            rc = EXIT_USAGE
            continue
        code, sp = cost_guard(sc, args, duration, out=sys.stdout)
        rc = max(rc, code)
        total += sp.cost_usd if sp is not None else 0.0
    if len(args.scenarios) > 1:
        print(f"total estimated cost: ${total:,.2f}")
    return rc


# -- validate ------------------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    if args.connect:
        from gevent import monkey

        monkey.patch_all()

    rc = EXIT_OK
    for path, sc in _each_scenario(args.scenarios):
        if sc is None:
            rc = EXIT_USAGE
            continue
        targets = ", ".join(t.name for t in sc.targets)
        print(f"✓ {path}: {len(sc.conversation)} turns, targets [{targets}], "
              f"{sc.load.users} users for {sc.load.duration_s:g}s ({sc.load.shape.type})")
        for w in target_warnings(sc, None):
            print(f"  warning: {w}", file=sys.stderr)
        if args.connect:
            from .client.probe import probe_targets

            rc = max(rc, probe_targets(sc))
    return rc


# -- report / compare / check -------------------------------------------------------------------------
def _run_dir_problem(path: str) -> str | None:
    """Why ``path`` is not a run directory (None when it is): commands say so and exit 2."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        return f"{path}: no such run directory"
    if not p.is_dir():
        return f"{path}: not a directory (expected a run directory such as reports/<run-id>)"
    if not any((p / name).is_file() for name in ("run.json", "turns.jsonl", "sessions.jsonl")):
        return f"{path}: not a run directory: no run.json, turns.jsonl or sessions.jsonl in it"
    return None


def cmd_report(args: argparse.Namespace) -> int:
    problem = _run_dir_problem(args.run_dir)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from .report.html import write_all
    from .report.verdict import judge

    paths = write_all(args.run_dir)
    for name, path in paths.items():
        print(f"{name}: {path}")
    try:
        v = judge(args.run_dir)
    except ValueError as exc:  # run.json holds a threshold that no longer parses
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(v.line())
    # The report was written; a run with no turns to report on is still not a silent success.
    return EXIT_INCOMPLETE if v.status == "INCOMPLETE" else EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    import datetime as dt

    problems = [p for p in map(_run_dir_problem, args.run_dirs) if p]
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return EXIT_USAGE
    import pandas as pd

    from .report.compare import compare_runs

    out = args.out or f"reports/compare-{dt.datetime.now():%Y%m%d-%H%M%S}"
    path = compare_runs(args.run_dirs, out)
    print(f"compare: {path}")
    try:
        table = pd.read_csv(path.parent / "compare.csv")
    except (OSError, ValueError, pd.errors.EmptyDataError):
        table = pd.DataFrame()
    if table.empty:
        print("Nothing to compare: fewer than two groups with turns.")
        return EXIT_INCOMPLETE if args.fail_on_regression else EXIT_OK
    reg = table[table["verdict"] == "regression"]
    for _, r in reg.iterrows():
        print(f"regression: {r['group']} {r['metric']}.{r['stat']} {r['value']:.4g} vs {r['baseline_value']:.4g} "
              f"(baseline {r['baseline']}; Δ {r['diff']:+.4g}, 95% CI [{r['ci_low']:+.4g}, {r['ci_high']:+.4g}])")
    n_imp = int((table["verdict"] == "improvement").sum())
    print(f"compare: {len(reg)} significant regression{'s' * (len(reg) != 1)}, {n_imp} improvement"
          f"{'s' * (n_imp != 1)}" + ("" if args.fail_on_regression or not len(reg) else
                                      " (exit 0; add --fail-on-regression to fail on them)"))
    return EXIT_BREACH if args.fail_on_regression and len(reg) else EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    problem = _run_dir_problem(args.run_dir)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    thresholds = None
    if args.thresholds:
        thresholds, problems = _threshold_file(args.thresholds)
        if problems:
            for p in problems:
                print(f"error: {p}", file=sys.stderr)
            return EXIT_USAGE
    return print_verdict(args.run_dir, thresholds, args.junit, args.allow_expectation_failures)


def _threshold_file(path: str) -> tuple[list[str], list[str]]:
    """A ``thresholds:`` YAML file → (thresholds, every problem as ``file: thresholds[i]: why``)."""
    import yaml

    from .report.check import parse_threshold

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        return [], [f"{path}: cannot read: {exc.strerror or exc}"]
    except yaml.YAMLError as exc:
        return [], [f"{path}: invalid YAML: {exc}"]
    thresholds = data.get("thresholds") if isinstance(data, dict) else data
    if not isinstance(thresholds, list):
        return [], [f"{path}: thresholds: expected a list of strings"]
    problems = []
    for i, t in enumerate(thresholds):
        try:
            parse_threshold(t)
        except ValueError as exc:
            problems.append(f"{path}: thresholds[{i}]: {exc}")
    return thresholds, problems


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulator.__main__ import serve

    return serve(args)


# -- fixtures ------------------------------------------------------------------------------------------
def cmd_fixtures_add(args: argparse.Namespace) -> int:
    from .fixtures import FixtureError, add_fixture

    try:
        fx = add_fixture(args.file, args.text, fixture_id=args.fixture_id, directory=args.dir,
                         language=args.language, use_case=args.use_case)
    except FixtureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"added {fx.id}: {fx.file} speech {fx.speech_start_ms}–{fx.speech_end_ms} ms of {fx.duration_ms} ms")
    return EXIT_OK


def cmd_fixtures_list(args: argparse.Namespace) -> int:
    from .tts.commands import cmd_list

    return cmd_list(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
