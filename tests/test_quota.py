"""Quota-aware load (issue 12): a connection budget that a real-style quota server never has to refuse.

The server is tests/quotaserver.py (a plain loopback stand-in written from Learn's quota page, not
our simulator). Windows are short (1–3 s instead of 60 s, ``target.limits.window_s``) so the tests
take seconds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.records import read_records

import quotaserver as qs

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "harness.cli"]

MANUAL = """
name: {name}
target:
  name: loopback
  endpoint: {url}
  model: gpt-realtime
  auth: {{kind: none}}
{limits}
session:
  turn_detection: null
conversation:
  - fixture: car_call_mom
    pause_ms: 100
    manual_commit: true
audio: {{trailing_silence_ms: 100}}
load:
  users: {users}
  spawn_rate: 1000
  duration: {duration}
  sessions_per_user: 1
  stop_timeout: 5s
  turn_timeout: 5s
"""


ARRIVALS = """
name: {name}
target:
  name: sim
  endpoint: {url}
  model: gpt-realtime
  auth: {{kind: none}}
  limits: {{connections_per_minute: {per_window}, window_s: {window_s}}}
session:
  turn_detection: null
conversation:
  - fixture: car_call_mom
    pause_ms: 100
    manual_commit: true
audio: {{trailing_silence_ms: 100}}
load:
  duration: 4s
  stop_timeout: 10s
  turn_timeout: 5s
  shape: {{type: arrivals, rate: 6000/min, max_concurrent: {callers}, callers: {callers}, seed: 7}}
"""


def arrivals_scenario(path: Path, url: str, *, callers: int, per_window: int, window_s: float) -> Path:
    path.write_text(textwrap.dedent(ARRIVALS.format(name=path.stem, url=url, callers=callers, per_window=per_window,
                                                    window_s=window_s)), encoding="utf-8")
    return path


def manual_scenario(path: Path, url: str, *, users: int, duration: str, limits: str = "") -> Path:
    path.write_text(textwrap.dedent(MANUAL.format(name=path.stem, url=url, users=users, duration=duration,
                                                  limits=limits)), encoding="utf-8")
    return path


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONUNBUFFERED"] = "1"
    return e


def run_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def test_run_within_connection_quota_is_never_refused(tmp_path):
    """12 callers at once against 5 new connections per 1 s window: the budget makes them wait
    (shown as waiting), the server never answers 429, every session completes its turn. A control run
    without target.limits against the same kind of server is refused, so the server does enforce."""
    with qs.QuotaServer(connections=5, window_s=1.0) as srv:
        sc = manual_scenario(tmp_path / "paced.yaml", srv.url, users=12, duration="5s",
                             limits="  limits: {connections_per_minute: 5, window_s: 1.0}")
        run = run_cli("run", str(sc), "--out", str(tmp_path / "paced"))
        assert run.returncode == 0, run.stderr[-3000:]
        assert srv.refused == [] and len(srv.accepted) >= 12 and srv.max_in_window() == 5
        assert srv.turns == len(srv.accepted), srv.errors
    sessions = list(read_records(tmp_path / "paced" / "sessions.jsonl"))
    assert [s["outcome"] for s in sessions] == ["ok"] * len(srv.accepted)
    assert all(s["connect_attempts"] == 1 and s["throttled_attempts"] == 0 for s in sessions)
    waited = sorted(s["budget_wait_ms"] for s in sessions)
    assert waited[:5] == [0.0] * 5 and waited[-1] > 1500, waited  # the third batch waited two windows
    meta = json.loads((tmp_path / "paced" / "run.json").read_text())
    assert list(meta["quota"].values())[0]["granted"] == len(sessions)

    with qs.QuotaServer(connections=5, window_s=1.0) as srv:
        sc = manual_scenario(tmp_path / "blind.yaml", srv.url, users=8, duration="3s")
        run = run_cli("run", str(sc), "--out", str(tmp_path / "blind"))
        assert len(srv.refused) >= 3, (srv.refused, run.stderr[-2000:])
    blind = list(read_records(tmp_path / "blind" / "sessions.jsonl"))
    assert sum(s["throttled_attempts"] for s in blind) >= 3
    assert {s["throttled"] for s in blind if s["throttled_attempts"]} == {"throttled_connections"}


def test_plan_prints_sizes_and_costs_for_every_shipped_scenario():
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scenarios").glob("*.yaml"))
    run = run_cli("plan", *files, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    for f in files:
        assert f"{f}: " in run.stdout, f
    blocks = run.stdout.split("\nscenarios/")
    assert len(blocks) == len(files)
    for block in blocks:
        assert re.search(r"estimated cost \$\d", block) and "peak " in block and "ramp " in block, block
        assert re.search(r"[\d,]+ audio tokens/min at the peak", block) and "min in," in block, block
    assert re.search(r"total estimated cost: \$[\d,.]+", run.stdout)


def test_max_cost_refuses_a_large_run_before_any_load(tmp_path):
    run = run_cli("run", "scenarios/breakpoint.yaml", "--max-cost", "0.01", "--out", str(tmp_path / "out"))
    assert run.returncode == 2
    assert re.search(r"refusing to start: the estimated cost \$[\d,.]+ is above --max-cost \$0\.01", run.stderr)
    assert not (tmp_path / "out").exists()  # refused before the run directory, let alone a connection
    ok = run_cli("plan", "scenarios/smoke.yaml", "--max-cost", "1000")
    assert ok.returncode == 0 and "estimated cost" in ok.stdout


def test_a_bad_price_table_is_refused_naming_file_and_field(tmp_path):
    bad = tmp_path / "prices.yaml"
    bad.write_text("models:\n  default: {audio_input: cheap, audio_output: 1}\n", encoding="utf-8")
    run = run_cli("plan", "scenarios/smoke.yaml", "--prices", str(bad))
    assert run.returncode == 2 and f"{bad}: models.default.audio_input: expected a price" in run.stderr


def test_plan_predicts_the_ramp_the_connection_quota_imposes(tmp_path):
    from harness.plan import load_prices, plan_scenario
    from harness.scenario import load_scenario

    with qs.QuotaServer(connections=None, window_s=1.0) as srv:
        sc = load_scenario(arrivals_scenario(tmp_path / "a.yaml", srv.url, callers=200, per_window=30, window_s=2.5))
    sp = plan_scenario(sc, prices=load_prices())
    (t,) = sp.targets
    assert t.quota_ramp_s == 15.0 and t.ramp_s == 15.0  # (ceil(200 / 30) - 1) windows of 2.5 s
    assert t.sessions == 200 and t.limits.connections_per_minute == 30
