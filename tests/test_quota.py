"""Quota-aware load (issue 12): a connection budget that a real-style quota server never has to refuse.

The server is tests/quotaserver.py (a plain loopback stand-in written from Learn's quota page, not
our simulator). Windows are short (1–3 s instead of 60 s, ``target.limits.window_s``) so the tests
take seconds.
"""

from __future__ import annotations

import json
import os
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
