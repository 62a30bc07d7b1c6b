"""Locust entry points as a user drives them: the web UI over its HTTP API (start, stop, start again
in one process), -u for shaped scenarios, Locust's CSV against our records, and exit codes."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from harness.exitcodes import EXIT_BREACH, EXIT_INCOMPLETE, EXIT_OK
from harness.records import read_records
from ports import WEB_UI_LINE, Child
from test_locust import LOCUST, ROOT, env, scenario, stats_rows

SLOW_PROFILE = """
name: slow
first_audio_anchor: speech_stopped
first_audio_delay_ms: {dist: fixed, value: 1800}
response_created_delay_ms: {dist: fixed, value: 20}
transcription_delay_ms: {dist: fixed, value: 100}
chunk_ms: {dist: fixed, value: 100}
cadence_jitter_ms: {dist: fixed, value: 0}
audio_pace: {dist: fixed, value: 2.0}
faults: {}
"""


def short_stop_scenario(tmp_path: Path, thresholds: str) -> Path:
    """test_locust's scenario with a short stop-timeout: a stop ends the sessions' turns quickly."""
    sc = scenario(tmp_path, thresholds=thresholds)
    sc.write_text(sc.read_text().replace("  stop_timeout: 10s", "  stop_timeout: 4s"))
    return sc


def _http(base: str, path: str, form: dict | None = None, timeout: float = 60) -> tuple[int, str]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    with urllib.request.urlopen(urllib.request.Request(base + path, data=data), timeout=timeout) as resp:
        return resp.status, resp.read().decode("utf-8", "replace")


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def _locust(args: list[str]):
    """A Locust process (output merged), killed if the test fails before it ends."""
    proc = Child(LOCUST + args, cwd=ROOT, env=env())
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _terminate(proc: Child) -> str:
    """SIGTERM, as a CI job's timeout or `kill` sends it; the process's output once it has exited."""
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=60)[0]


def _records(path: Path) -> list[dict]:
    return list(read_records(path)) if path.exists() else []


def test_web_ui_start_stop_start_runs_two_real_tests_each_with_its_own_report_and_verdict(tmp_path):
    sc = short_stop_scenario(tmp_path, "'first_audio_ms.p95 <= 2000'")
    slow = tmp_path / "slow.yaml"
    slow.write_text(SLOW_PROFILE, encoding="utf-8")
    out = tmp_path / "out"
    with _locust(["--web-host", "127.0.0.1", "--web-port", "0", "--scenario", str(sc),
                  "--voiceload-out", str(out)]) as proc:
        base = f"http://127.0.0.1:{proc.port(WEB_UI_LINE)}"  # accepting connections once announced
        page = _http(base, "/")[1]
        assert "embedded simulator" in page  # a host from the scenario: no "no host" banner
        assert '"num_users": 2' in page and '"run_time": 8' in page  # form defaults from the scenario
        runs, stops = [out, tmp_path / "out-2"], []
        for i, (users, profile) in enumerate([(1, str(slow)), (2, "")]):
            status, body = _http(base, "/swarm", {"user_count": users, "spawn_rate": 5, "host": "",
                                                  "voiceload_profile": profile})
            assert status == 200 and json.loads(body)["success"], body
            _wait(lambda: len(_records(runs[i] / "turns.jsonl")) >= 2, 40, f"turns in test {i + 1}")
            if i == 0:  # each kind apart, no "Aggregated" blend; the Charts tab plots TURN alone
                live = json.loads(_http(base, "/stats/requests")[1])
                assert "Aggregated" not in {r["name"] for r in live["stats"]}
                kinds = {r["kind"]: r for r in live["extended_stats"][0]["data"]}
                assert {"TURN", "VAD"} <= set(kinds) and kinds["TURN"]["requests"] >= 2  # CONNECT: at session end
                turn = next(r for r in live["stats"] if r["method"] == "TURN")
                assert live["total_rps"] == turn["total_rps"]
                assert "TURN" in _http(base, "/voiceload/charts")[1]
                _wait(lambda: "TURN" in json.loads(_http(base, "/voiceload/series")[1]), 10, "the TURN series")
            stops.append(time.time())
            _http(base, "/stop", {})  # returns once this test's report is written
            _wait(lambda: (runs[i] / "report.html").exists(), 20, f"the report of test {i + 1}")
        text = _terminate(proc)
    metas = [json.loads((d / "run.json").read_text()) for d in runs]
    assert metas[0]["run_id"] != metas[1]["run_id"]
    for d, meta, t_stop in zip(runs, metas, stops):
        turns, sessions = _records(d / "turns.jsonl"), _records(d / "sessions.jsonl")
        assert turns and sessions and meta["records"]["turns"] == len(turns), d
        assert {s["run_id"] for s in sessions} == {meta["run_id"]}  # nothing appended across tests
        # Users did not connect-and-close: a session without a turn is only one the stop cut short (a user
        # may start its next session just before the stop arrives).
        assert all(s["turns_attempted"] > 0 or s["t_end"] >= t_stop for s in sessions), (t_stop, sessions)
        for name in ("turns.csv", "summary.csv", "report.html"):
            assert (d / name).exists(), (d, name)
    assert max(t["active_sessions"] for t in _records(runs[0] / "turns.jsonl")) == 1  # the form's user count
    # Each verdict is its own: the slow first test breached the threshold, the fast second one passed.
    assert metas[0]["verdict"]["exit_code"] == EXIT_BREACH, metas[0]
    assert metas[1]["verdict"]["exit_code"] == EXIT_OK, metas[1]
    # The process exits with its worst test's code: the later pass does not hide the breach.
    assert proc.returncode == EXIT_BREACH, text[-3000:]
    assert "the process will exit 1 (thresholds or expectations breached): the worst of its 2 tests" in text
    assert "will be ignored" not in text


def test_turns_cut_short_by_the_generators_stop_are_not_counted_as_overload():
    import pandas as pd

    from harness.records import STOP_ABORTED
    from harness.report.verdict import judge_frames

    ok = {"target": "t", "valid": True, "complete": True, "reason": "complete", "first_audio_ms": 700.0, "error": ""}
    cut = {**ok, "valid": False, "complete": False, "reason": "disconnected", "error": f"close 1000; {STOP_ABORTED}"}
    v = judge_frames(pd.DataFrame([ok, ok, cut]), None, {"status": "complete"})
    assert v.exit_code == EXIT_OK, v.reasons
    v = judge_frames(pd.DataFrame([cut]), None, {"status": "complete"})
    assert v.status == "INCOMPLETE" and "cut short" in v.reasons[0]


def soak_scenario(tmp_path: Path) -> Path:
    """A soak ramping to 4 users: -u / --users 2 must make it peak at 2 (rescaled, never ignored)."""
    sc = scenario(tmp_path, thresholds="'completeness >= 0.5'")
    sc.write_text(sc.read_text().replace("  users: 2\n", "  users: 4\n  shape: {type: soak, users: 4, ramp: 2s}\n")
                  .replace("  stop_timeout: 10s", "  stop_timeout: 4s"))
    return sc


def test_users_flag_caps_a_shaped_scenario_in_locust_and_voiceload_run(tmp_path):
    sc = soak_scenario(tmp_path)
    popen = dict(cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    loc = subprocess.Popen(LOCUST + ["--headless", "--scenario", str(sc), "-u", "2", "-t", "6s", "--only-summary",
                                     "--voiceload-out", str(tmp_path / "loc"), "--csv", str(tmp_path / "loc")], **popen)
    cli = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(sc), "--users", "2", "--duration", "6s",
                            "--out", str(tmp_path / "cli"), "--quiet"], **popen)  # both at once: half the wall time
    errs = {}
    for name, proc in (("loc", loc), ("cli", cli)):
        errs[name] = proc.communicate(timeout=120)[1]
        assert proc.returncode == EXIT_OK, (name, errs[name][-3000:])
        turns = _records(tmp_path / name / "turns.jsonl")
        assert max(t["active_sessions"] for t in turns) == 2, (name, [t["active_sessions"] for t in turns])
        assert json.loads((tmp_path / name / "run.json").read_text())["load"]["peak_users"] == 2
    assert "will be ignored" not in errs["loc"]
    # Locust's CSV counts every turn and session of turns.jsonl, the last second included.
    rows = stats_rows(tmp_path / "loc_stats.csv")
    assert int(rows[("TURN", "loc:turn")]["Request Count"]) == len(_records(tmp_path / "loc" / "turns.jsonl"))
    assert int(rows[("CONNECT", "loc:connect")]["Request Count"]) == len(_records(tmp_path / "loc" / "sessions.jsonl"))


def test_a_headless_run_stopped_by_sigterm_is_incomplete_with_exit_3(tmp_path):
    sc = scenario(tmp_path)
    out = tmp_path / "out"
    with _locust(["--headless", "--scenario", str(sc), "-u", "1", "-t", "60s", "--stop-timeout", "2",
                  "--only-summary", "--voiceload-out", str(out)]) as proc:
        _wait(lambda: _records(out / "turns.jsonl"), 40, "a first turn")
        text = _terminate(proc)
    assert proc.returncode == EXIT_INCOMPLETE, text[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["verdict"]["status"] == "INCOMPLETE"
    assert (out / "report.html").exists()
