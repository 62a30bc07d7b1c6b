"""Locust integration, end to end: headless local run, master with two workers, and the CI gate."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.records import read_records
from ports import MASTER_LINE, Child

ROOT = Path(__file__).resolve().parent.parent
LOCUST = [sys.executable, "-m", "locust", "-f", str(ROOT / "harness" / "locustfile.py")]

SCENARIO = """
name: loc
target: {embedded: true, profile: ideal}
session:
  turn_detection: {type: server_vad, silence_duration_ms: 500}
  input_audio_transcription: {model: azure-speech}
conversation:
  - fixture: car_call_mom
    pause_ms: 300
  - fixture: car_eta
    pause_ms: 300
audio: {trailing_silence_ms: 200}
load:
  users: 2
  duration: 8s
  stop_timeout: 10s
  turn_timeout: 8s
  max_pacing_lag_ms: 2000  # a busy 2-core CI box must not turn the verdict into "overloaded"
thresholds: [{thresholds}]
"""


def scenario(tmp_path: Path, thresholds: str = "'completeness >= 0.9'") -> Path:
    p = tmp_path / "loc.yaml"
    p.write_text(textwrap.dedent(SCENARIO.replace("{thresholds}", thresholds)), encoding="utf-8")
    return p


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.pop("VOICELOAD_SCENARIO", None)
    e["PYTHONUNBUFFERED"] = "1"
    return e


def start_distributed(sc: Path, out: Path, run_time: str, extra: list[str] | None = None, users: int | None = 4):
    """A headless master expecting two workers on the loopback port it picked (and announced), and the two
    workers, started once that port is known.

    ``users``: -u and -r (None: the scenario's; for a shaped scenario -u is its peak)."""
    popen = dict(cwd=ROOT, env=env())
    load = ["-u", str(users), "-r", str(users)] if users is not None else []
    master = Child(LOCUST + ["--master", "--headless", "--expect-workers", "2", "--master-bind-host", "127.0.0.1",
                             "--master-bind-port", "0", "--scenario", str(sc), *load, "-t", run_time,
                             "--voiceload-out", str(out), "--only-summary", *(extra or [])], **popen)
    try:
        port = master.port(MASTER_LINE)
    except BaseException:
        master.kill()
        master.communicate()
        raise
    workers = [Child(LOCUST + ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                               "--scenario", str(sc)], **popen) for _ in range(2)]
    return master, workers


def run_distributed(sc: Path, out: Path, run_time: str, extra: list[str] | None = None,
                    users: int | None = 4) -> str:
    """start_distributed's master and workers, to their end; the master's output (its exit code must be 0)."""
    master, workers = start_distributed(sc, out, run_time, extra, users=users)
    try:
        text, _ = master.communicate(timeout=150)
        for w in workers:
            w.communicate(timeout=30)
    finally:
        for p in [master, *workers]:
            if p.poll() is None:
                p.kill()
    assert master.returncode == 0, text[-3000:]
    return text


def stats_rows(csv_path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(csv_path, newline="") as fh:
        return {(r["Type"], r["Name"]): r for r in csv.DictReader(fh)}


def test_headless_run_writes_turn_rows_and_one_record_per_turn(tmp_path):
    sc = scenario(tmp_path)
    out = tmp_path / "out"
    run = subprocess.run(LOCUST + ["--headless", "--scenario", str(sc), "-u", "2", "-r", "2", "-t", "8s",
                                   "--csv", str(tmp_path / "run"), "--html", str(tmp_path / "run.html"),
                                   "--voiceload-out", str(out), "--only-summary"],
                         cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    turns = list(read_records(out / "turns.jsonl"))
    sessions = list(read_records(out / "sessions.jsonl"))
    assert sessions and turns
    assert len(turns) == sum(s["turns_recorded"] for s in sessions) == sum(s["turns_attempted"] for s in sessions)
    assert len({(t["session_id"], t["turn_index"]) for t in turns}) == len(turns)  # no duplicates
    rows = stats_rows(tmp_path / "run_stats.csv")
    turn = rows[("TURN", "loc:turn")]
    assert int(turn["Request Count"]) == len(turns)  # the drain lets the CSV writer catch the last turns
    assert 500 < float(turn["Median Response Time"]) < 1500
    assert ("VAD", "loc:vad") in rows and ("TRANSCRIPT", "loc:transcript") in rows
    assert ("CONNECT", "loc:connect") in rows
    assert (tmp_path / "run.html").stat().st_size > 0
    for name in ("report.html", "turns.csv", "summary.csv", "run.json"):
        assert (out / name).exists(), name
    meta = json.loads((out / "run.json").read_text())
    assert meta["records"]["turns"] == len(turns) and meta["runner"] == "LocalRunner"


def test_master_with_two_workers_receives_every_record_exactly_once(tmp_path):
    sc = scenario(tmp_path)
    out = tmp_path / "out"
    master, workers = start_distributed(sc, out, "8s", ["--csv", str(tmp_path / "dist")])
    try:
        m_out, _ = master.communicate(timeout=150)
        w_outs = [w.communicate(timeout=30)[0] for w in workers]
    finally:
        for p in [master, *workers]:
            if p.poll() is None:
                p.kill()
    assert master.returncode == 0, m_out[-3000:]
    produced = {}
    for text in w_outs:
        m = re.search(r"voiceload worker (\S+): (\d+) turn records and (\d+) session records produced, (\d+) not "
                      r"yet shipped", text)
        assert m, text[-2000:]
        assert m.group(4) == "0", text[-2000:]
        produced[m.group(1)] = int(m.group(2))
    turns = list(read_records(out / "turns.jsonl"))
    keys = [(t["session_id"], t["turn_index"]) for t in turns]
    assert len(keys) == len(set(keys))  # exactly once
    by_worker = {w: sum(1 for t in turns if t["worker"] == w) for w in produced}
    assert by_worker == produced and all(n > 0 for n in produced.values()), (by_worker, produced)
    # 4 users on 2 workers: a worker never has more than 2 sessions, the run had up to 4
    assert 2 < max(t["active_sessions"] for t in turns) <= 4, [t["active_sessions"] for t in turns]
    meta = json.loads((out / "run.json").read_text())
    assert sorted(meta["workers"]["seen"]) == sorted(produced) and meta["workers"]["missing"] == []
    rows = stats_rows(tmp_path / "dist_stats.csv")  # the master's CSV counts what the records hold
    assert int(rows[("TURN", "loc:turn")]["Request Count"]) == len(turns)
    assert int(rows[("CONNECT", "loc:connect")]["Request Count"]) == len(list(read_records(out / "sessions.jsonl")))
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "<svg" in report or "<img" in report


def test_threshold_breach_gives_nonzero_exit_and_junit(tmp_path):
    sc = scenario(tmp_path, thresholds="'first_audio_ms.p95 <= 10', 'completeness >= 0.5'")
    out = tmp_path / "out"
    junit = tmp_path / "thresholds.xml"
    run = subprocess.run(LOCUST + ["--headless", "--scenario", str(sc), "-u", "1", "-t", "5s",
                                   "--voiceload-out", str(out), "--voiceload-junit", str(junit), "--only-summary"],
                         cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr[-3000:]  # harness/exitcodes.py: EXIT_BREACH
    root = ET.parse(junit).getroot()
    failures = [f for f in root.iter("failure")]
    assert len(failures) == 1
    assert "first_audio_ms.p95" in (failures[0].get("message") or "")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert any("completeness" in name for name in cases)
    # The same gate from the command line, on the same records.
    check = subprocess.run([sys.executable, "-m", "harness.cli", "check", str(out), "--junit",
                            str(tmp_path / "again.xml")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "first_audio_ms.p95" in check.stdout


@pytest.mark.parametrize("source", ["locust.conf", "env"])
def test_scenario_option_from_config_file_or_environment(tmp_path, source):
    sc = scenario(tmp_path)
    out = tmp_path / "out"
    e = env()
    args = ["--headless", "-u", "1", "-t", "3s", "--voiceload-out", str(out), "--only-summary"]
    if source == "env":
        e["VOICELOAD_SCENARIO"] = str(sc)
    else:
        conf = tmp_path / "locust.conf"
        conf.write_text(f"scenario = {sc}\n")
        args += ["--config", str(conf)]
    run = subprocess.run(LOCUST + args, cwd=ROOT, env=e, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["scenario"] == "loc" and meta["scenario_file"] == str(sc)


def test_a_killed_worker_is_reported_and_its_shipped_records_kept(tmp_path):
    sc = scenario(tmp_path)
    out = tmp_path / "out"
    master, workers = start_distributed(sc, out, "16s")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until both workers have shipped records
            turns = list(read_records(out / "turns.jsonl")) if (out / "turns.jsonl").exists() else []
            if len({t["worker"] for t in turns}) == 2:
                break
            time.sleep(0.5)
        shipped = {w: sum(1 for t in turns if t["worker"] == w) for w in {t["worker"] for t in turns}}
        assert len(shipped) == 2, shipped
        workers[0].kill()  # SIGKILL: no goodbye, no final report
        m_out, _ = master.communicate(timeout=150)
        workers[1].communicate(timeout=30)
    finally:
        for p in [master, *workers]:
            if p.poll() is None:
                p.kill()
    assert master.returncode in (0, 1), m_out[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert len(meta["workers"]["missing"]) == 1, meta["workers"]
    dead = meta["workers"]["missing"][0]
    assert any(dead in n and "went missing" in n for n in meta["notes"])
    turns = list(read_records(out / "turns.jsonl"))
    assert sum(1 for t in turns if t["worker"] == dead) >= shipped[dead] >= 1  # what it shipped is kept
    keys = [(t["session_id"], t["turn_index"]) for t in turns]
    assert len(keys) == len(set(keys))
    assert "went missing" in (out / "report.html").read_text(encoding="utf-8")
