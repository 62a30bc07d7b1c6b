"""A signal at an exact step of ``voiceload run`` (not at a guessed delay): exit 3 at once, a report, no orphan.

tests/hooks/sitecustomize.py makes the CLI process signal itself at the step (VOICELOAD_TEST_SIGNAL). The
steps are the ones where a signal used to be lost or fatal: inside the at-fork hook of the embedded
simulator's spawn (Python dropped the KeyboardInterrupt there, and the run went on for its whole
duration: the CI hang of test_a_signal_while_the_run_starts...), and after the runner's gevent handlers
were cancelled (libev put SIGTERM back to SIG_DFL: the process died while writing its report).
The simulator-start case is checked for Locust too (its child used to be left running).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness.exitcodes import EXIT_INCOMPLETE, EXIT_OK
from test_cli_contract import ROOT, VOICELOAD, last_line, scenario
from test_locust import LOCUST

HOOKS = Path(__file__).resolve().parent / "hooks"
LOST_SIGNAL_BOUND_S = 30  # the scenario runs 60 s: a lost signal cannot end the run within this bound


def run_signalled(tmp_path: Path, spec: str, *args: str, command: list[str] | None = None,
                  ) -> tuple[subprocess.CompletedProcess, Path]:
    """``voiceload run`` (or ``command``) on the 60 s scenario, signalled at the step ``spec`` names."""
    out = tmp_path / "run"
    env = dict(os.environ, VOICELOAD_TEST_SIGNAL=spec,
               PYTHONPATH=os.pathsep.join(filter(None, [str(HOOKS), os.environ.get("PYTHONPATH")])))
    cmd = command or [VOICELOAD, "run", str(scenario(tmp_path)), "--out", str(out), "--quiet", *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LOST_SIGNAL_BOUND_S)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{spec}: the signal was lost, the run went on: {exc.stderr!r}") from None
    return proc, out


def simulators_of(tmp_path: Path) -> list[str]:
    """Processes whose command line names this test's directory (the simulator's --truth-log is in it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "harness.simulator" in cmd and str(tmp_path) in cmd:
            found.append(f"{pid}: {cmd}")
    return found


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_while_the_simulator_is_spawned_ends_the_run_incomplete_with_no_simulator_left(tmp_path, sig):
    proc, out = run_signalled(tmp_path, f"{sig}@fork")
    assert proc.returncode == EXIT_INCOMPLETE, proc.stderr
    assert simulators_of(tmp_path) == []  # stopped before we exited, not left to notice its parent is gone
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["interrupted"]["signal"] == sig, meta
    assert last_line(proc.stdout).startswith(f"VERDICT: INCOMPLETE — interrupted by {sig}"), proc.stdout
    assert "VERDICT: INCOMPLETE" in (out / "report.html").read_text()
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr


def test_a_signal_while_the_simulator_starts_ends_the_wait_for_it(tmp_path):
    # The child signals us and then never listens: without the wait ending at the signal, start-up would
    # time out after 15 s ("simulator did not start", exit 2), not end interrupted.
    proc, out = run_signalled(tmp_path, "SIGTERM@child")
    assert proc.returncode == EXIT_INCOMPLETE, proc.stderr
    assert simulators_of(tmp_path) == []
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["interrupted"]["signal"] == "SIGTERM", meta
    assert "Traceback" not in proc.stderr, proc.stderr


def test_locust_signalled_while_its_simulator_starts_ends_incomplete_and_stops_it(tmp_path):
    # Locust's own gevent handlers end the test; the user waiting for the listening line is killed at
    # stop_timeout, and SimulatorProcess.start stops its child on the way out (it was left running).
    out = tmp_path / "run"
    proc, _ = run_signalled(tmp_path, "SIGTERM@child", command=[
        *LOCUST, "--headless", "--scenario", str(scenario(tmp_path)), "--voiceload-out", str(out), "-u", "1",
        "-t", "60s", "--stop-timeout", "2", "--only-summary"])
    assert proc.returncode == EXIT_INCOMPLETE, proc.stderr[-3000:]
    assert simulators_of(tmp_path) == []
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"


def test_a_signal_while_the_report_is_written_does_not_kill_the_process(tmp_path):
    proc, out = run_signalled(tmp_path, "SIGTERM@write:turns.csv", "--sessions-per-user", "1")
    assert proc.returncode == EXIT_OK, (proc.returncode, proc.stderr)  # the load had finished: its verdict stands
    assert last_line(proc.stdout).startswith("VERDICT: PASS"), proc.stdout
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    assert (out / "report.html").is_file() and (out / "turns.csv").is_file()


@pytest.mark.parametrize("step", ["import:harness.tts.render", "open:s.yaml"])  # the parser built; the scenario read
def test_a_signal_before_the_run_directory_exists_still_ends_with_the_verdict_line(tmp_path, step):
    proc, out = run_signalled(tmp_path, f"SIGTERM@{step}")
    assert proc.returncode == EXIT_INCOMPLETE, proc.stderr
    assert last_line(proc.stdout) == "VERDICT: INCOMPLETE — interrupted by SIGTERM before the run started", proc.stdout
    assert not out.exists() and "Traceback" not in proc.stderr, proc.stderr
