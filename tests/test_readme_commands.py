"""Every command in README.md's ```bash blocks runs, so the README cannot drift from the code.

Commands run nearly verbatim from a scratch workspace (``.venv``, ``harness`` and ``scenarios``
symlinked, ``audio_fixtures`` copied because ``fixtures add`` writes to it), so relative outputs such
as ``reports/``, ``truth.jsonl`` or ``out/run`` land in the scratch directory. Only what would make a
test long or non-hermetic is rewritten: durations and user counts are shortened, ``--port 8765``
becomes port 0 (the child names the port it got: tests/ports.py), placeholders (``reports/<run-id>``) become the runs made earlier in the same
README, long-running servers (``simulate``, the Locust web UI, master/worker) are started, checked
and stopped. ``make demo`` runs the Makefile's own recipe with the same shortening.

A command no rule knows fails the test: add a rule here when you add a command to the README.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from ports import MASTER_LINE, WEB_UI_LINE, Child

ROOT = Path(__file__).resolve().parent.parent
#: Commands that cannot run offline, each with the reason.
SKIPPED = {
    "az login": "signs in to Azure interactively; the Azure commands after it run against the embedded "
                "simulator because compare_regions.yaml falls back to it when *_ENDPOINT is unset",
    "make test": "runs this very suite",
}
OK = {0}
#: A tiny run may breach a scenario threshold (1); anything else (usage error, incomplete) is a break.
JUDGED = {0, 1}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def strip_comment(cmd: str) -> list[str]:
    lex = shlex.shlex(cmd, posix=True, punctuation_chars=False)
    lex.whitespace_split = True
    lex.commenters = "#"
    return list(lex)


def trim(path: Path) -> None:
    """A scenario cut to its first turn with short drains: the same command, seconds instead of minutes."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not data.get("conversation"):
        return
    first = data["conversation"][0]
    if isinstance(first, dict) and isinstance(first.get("expect"), dict):
        first["expect"].pop("reason", None)  # nothing interrupts a lone turn
    data["conversation"] = [first]
    load = data.setdefault("load", {})
    load.update(stop_timeout="5s", think_time=0, max_pacing_lag_ms=5000)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def shorten(argv: list[str]) -> list[str]:
    """Durations to 3 s and user counts to 1: the command's shape stays, its cost does not."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("--duration", "-t", "--run-time") and i + 1 < len(argv):
            out += [a, "3s"]
            i += 2
            continue
        if a in ("--users", "-u") and i + 1 < len(argv):
            out += [a, "1"]
            i += 2
            continue
        out.append(a)
        i += 1
    return out


class Workspace:
    def __init__(self, tmp: Path):
        self.dir = tmp
        for name in (".venv", "harness"):
            (tmp / name).symlink_to(ROOT / name)
        shutil.copytree(ROOT / "audio_fixtures", tmp / "audio_fixtures")
        shutil.copytree(ROOT / "scenarios", tmp / "scenarios")
        for path in (tmp / "scenarios").glob("*.yaml"):
            trim(path)
        self.env = {k: v for k, v in os.environ.items() if not k.endswith("_ENDPOINT")}
        self.env["PYTHONPATH"] = str(ROOT)
        self.runs: list[Path] = []  # outputs of the `voiceload run`s listed before the placeholders
        self.last_placeholder = -1  # index of the last README command with a <run-...> placeholder


    def substitute(self, argv: list[str]) -> list[str]:
        first = str(self.runs[0].relative_to(self.dir)) if self.runs else "reports/none"
        last = str(self.runs[-1].relative_to(self.dir)) if self.runs else "reports/none"
        table = {"reports/<run-id>": last, "reports/<run-a>": first, "reports/<run-b>": last}
        return [table.get(a, a) for a in argv]

    def run(self, argv: list[str], timeout: float = 90, runs: list[Path] | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=timeout)
        if runs is not None:
            runs += [self.dir / m for m in re.findall(r"^voiceload: run \S+ → (\S+)$", proc.stderr, re.M)]
        return proc

    def popen(self, argv: list[str]) -> Child:
        return Child(argv, cwd=self.dir, env=self.env)


def stop(proc: Child, sig: int = signal.SIGTERM, timeout: float = 30) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def overloaded(proc: subprocess.CompletedProcess) -> bool:
    """Exit 3 because this machine was too busy to pace audio in real time: an honest verdict about the
    test machine, not a broken command."""
    return proc.returncode == 3 and "overloaded" in proc.stdout


def make_recipe(target: str) -> list[str]:
    """The command under a Makefile target (``$(BIN)`` → ``.venv/bin``)."""
    text = (ROOT / "Makefile").read_text()
    m = re.search(rf"^{re.escape(target)}:.*\n\t(.+)$", text, re.M)
    assert m, f"Makefile has no recipe for {target}"
    return shlex.split(m.group(1).replace("$(BIN)", ".venv/bin"))


def run_voiceload(ws: Workspace, argv: list[str], placeholders: bool) -> str:
    sub = argv[1] if len(argv) > 1 else ""
    argv = ws.substitute(shorten(argv))
    if sub == "run":
        argv += ["--sessions-per-user", "1", "--quiet"] + [
            x for flag, value in (("--duration", "3s"), ("--users", "1")) if flag not in argv for x in (flag, value)]
        proc = ws.run(argv, runs=ws.runs if placeholders else None)
        assert proc.returncode in JUDGED or overloaded(proc), proc.stdout + proc.stderr
        assert "VERDICT:" in proc.stdout, proc.stdout + proc.stderr
        return proc.stdout
    if sub == "simulate":
        argv = ["0" if a == "8765" else a for a in argv]
        sim = ws.popen(argv)
        try:
            sim.wait_for("listening on ws://", 30)
        finally:
            out = stop(sim)
        assert sim.returncode == 0, out
        return out
    if sub == "fixtures" and argv[2] == "add":
        data, rate = sf.read(ROOT / "audio_fixtures" / "car_call_mom.wav")  # a real spoken line, as FLAC
        sf.write(ws.dir / argv[3], data, rate, format="FLAC")
    proc = ws.run(argv)
    codes = JUDGED if sub in ("check", "compare") else OK
    assert proc.returncode in codes or overloaded(proc), proc.stdout + proc.stderr
    return proc.stdout


def run_locust(ws: Workspace, argv: list[str], pending: dict) -> str:
    argv = shorten(argv)
    if "--worker" in argv:  # joins the master started by the previous command
        master, port = pending.pop("master")
        worker = ws.popen(argv + ["--master-port", str(port)])
        try:
            out, _ = master.communicate(timeout=120)
        finally:
            stop(worker)
        assert master.returncode in (0, 1, 3) and "Traceback" not in out, out
        assert "voiceload report:" in out, out
        return out
    if "--master" in argv:  # binds a port of its own choosing and names it; its worker joins that port
        argv = [("1" if a == "2" and argv[i - 1] == "--expect-workers" else a) for i, a in enumerate(argv)]
        master = ws.popen(argv + ["--master-bind-host", "127.0.0.1", "--master-bind-port", "0", "-u", "1", "-t", "3s"])
        try:
            pending["master"] = (master, master.port(MASTER_LINE))
        except BaseException:
            stop(master)
            raise
        return "(master started; the next command is its worker)"
    if "--headless" not in argv:  # the web UI: it must serve its page, then stop cleanly
        ui = ws.popen(argv + ["--web-host", "127.0.0.1", "--web-port", "0"])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui.port(WEB_UI_LINE, 30)}/", timeout=10) as page:
                page.read()  # the whole page, so stopping never cuts a response in flight
                status = page.status
        finally:
            out = stop(ui)  # SIGTERM: Locust quits cleanly (SIGINT may interrupt a greenlet mid-send)
        assert status == 200, out
        assert "Traceback" not in out, out
        return out
    proc = ws.run(argv, timeout=120)
    assert proc.returncode in (0, 1, 3) and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    csv = argv[argv.index("--csv") + 1] if "--csv" in argv else None
    if csv:
        assert (ws.dir / f"{csv}_stats.csv").is_file()
    return proc.stdout


def plan_groups(ws: Workspace) -> tuple[dict[str, list[tuple[str, list[str]]]], list[str]]:
    """README commands in independent groups (run side by side, each in README order): the runs whose
    outputs fill the placeholders and what reads them, each later run with what reads its ``--out``,
    the other voiceload commands, the Locust UI/headless pair and the distributed pair."""
    cmds = readme_commands()
    ws.last_placeholder = max((i for i, c in enumerate(cmds) if "<run-" in c), default=-1)
    groups: dict[str, list[tuple[str, list[str]]]] = {}
    outs: dict[str, str] = {}  # --out directory -> the group of the run that writes it
    skipped = []
    for i, cmd in enumerate(cmds):
        if cmd.split("#")[0].strip() in SKIPPED:
            skipped.append(cmd)
            continue
        argv = strip_comment(cmd)
        if argv[:2] == ["make", "demo"]:
            argv = make_recipe("demo")
        tool = Path(argv[0]).name
        if tool == "locust":
            group = "distributed" if {"--master", "--worker"} & set(argv) else "locust"
        elif tool == "voiceload" and argv[1] == "run":
            group = f"run{i}"  # a run of its own; those before the placeholders fill them
        elif tool == "voiceload" and any(a.rstrip("/") in outs for a in argv[2:]):
            group = next(outs[a.rstrip("/")] for a in argv[2:] if a.rstrip("/") in outs)
        elif tool == "voiceload" and "<run-" in cmd:
            group = "placeholders"  # after every other group: reads the runs made before it
        elif tool == "voiceload":
            group = "connect" if "--connect" in argv else "other"
        else:
            pytest.fail(f"README command {cmd!r} has no rule in {Path(__file__).name}: add one (or a reason to "
                        f"skip it to SKIPPED)")
        if "--out" in argv:
            outs[argv[argv.index("--out") + 1].rstrip("/")] = group
        groups.setdefault(group, []).append((cmd, argv))
    return groups, skipped


def run_group(ws: Workspace, name: str, items: list[tuple[str, list[str]]]) -> list[str]:
    pending: dict = {}
    ran = []
    for cmd, argv in items:
        t0 = time.monotonic()
        if Path(argv[0]).name == "locust":
            run_locust(ws, argv, pending)
        else:
            if any("*" in a for a in argv):  # the shell's glob, on the real (read-only) files
                argv = [x for a in argv for x in (sorted(str(p) for p in ROOT.glob(a)) if "*" in a else [a])]
            run_voiceload(ws, argv, placeholders=name.startswith("run") and int(name[3:]) < ws.last_placeholder)
        ran.append(f"{time.monotonic() - t0:5.1f}s [{name}] {cmd}")
    assert not pending, f"a Locust master was started but no worker command followed: {pending}"
    return ran


def test_every_readme_command_runs(tmp_path):
    ws = Workspace(tmp_path)
    groups, skipped = plan_groups(ws)
    last = groups.pop("placeholders", [])
    with ThreadPoolExecutor(max_workers=min(5, len(groups))) as pool:
        futures = {name: pool.submit(run_group, ws, name, items) for name, items in groups.items()}
        ran = [line for f in futures.values() for line in f.result()]
    ran += run_group(ws, "placeholders", last)  # report / compare / check reports/<run-...>
    print("\n".join(ran + [f"skipped: {c} ({SKIPPED[c.split('#')[0].strip()]})" for c in skipped]))
    assert len(ran) + len(skipped) == len(readme_commands())
    assert len(ws.runs) >= 2  # the placeholders were real runs
