"""CI smoke test of the benchmark: ``python -m bench --quick`` runs end to end and writes sane JSON.

No timing assertions: this machine is shared, and bench/RESULTS.md is where numbers are judged.
Only shape and plausibility are checked (every step streamed, turns were compared with ground
truth, percentiles are ordered and finite).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ROW_KEYS = {"kind", "sessions", "sessions_streaming", "late_p50_ms", "late_p99_ms", "late_max_ms", "cpu_pct",
            "cpu_pct_per_session", "rss_kb_per_session", "err_p50_ms", "err_p99_ms", "invalid_pct", "compared",
            "sim_cpu_pct", "sim_lag_p99_ms", "core_others_pct", "meets_goals", "all_runs"}


@pytest.mark.serial  # a CPU/throughput benchmark that loads the whole machine: run alone (make test)
@pytest.mark.timeout(180)
def test_quick_bench_writes_results(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1, files
    doc = json.loads(files[0].read_text())
    assert doc["quick"] is True
    assert {"date", "machine", "versions", "method", "harness", "baseline", "summary"} <= doc.keys()
    assert doc["machine"]["cpus"] >= 1 and doc["versions"]["gevent"]
    assert [(r["scheme"], r["sessions"]) for r in doc["harness"]] == [("ws", 5), ("ws", 10), ("wss", 5)]
    assert [(r["pacing"], r["sessions"]) for r in doc["baseline"]] == [("deadline", 5)]
    for row in doc["harness"] + doc["baseline"]:
        assert not row.get("failed"), row.get("error")
        assert ROW_KEYS <= row.keys(), ROW_KEYS - row.keys()
        assert row["sessions_streaming"] == row["sessions"]
        assert 0 <= row["late_p50_ms"] <= row["late_p99_ms"] <= row["late_max_ms"] + 0.1
        assert 0 < row["cpu_pct"] < 100 * (doc["machine"]["cpus"] or 1)
        assert row["rss_kb_per_session"] >= 0
        if row["compared"] == 0:
            # Only a stall can explain it (one VM stall invalidates every turn of a 4 s window), and then the
            # bench ran the step twice: both runs invalid, never a turn silently missing from the truth.
            assert row["invalid_pct"] == 100.0 and len(row["all_runs"]) == 2, row
            assert all(r["turns"] and r["compared"] == 0 and r["invalid_pct"] == 100.0 for r in row["all_runs"])
        else:
            assert 0 <= row["err_p50_ms"] <= row["err_p99_ms"] < 1000
    assert sum(r["compared"] for r in doc["harness"]) >= 1, "no turn could be joined with the simulator's ground truth"
    for row in doc["harness"]:
        assert row["stamp_reads"] > 0 and row["stamp_p50_ms"] is not None  # kernel timestamps were on
        assert 0 <= row["invalid_pct"] <= 100
    s = doc["summary"]
    assert {"goals", "harness_max_sessions_pacing", "harness_max_sessions_meeting_goals"} <= s.keys()
    md = (tmp_path / "RESULTS.md").read_text()
    assert "## Harness against the simulator" in md and "## Conclusions" in md
    assert "wss://" in md and "wss" in s and s["wss"]["harness_max_sessions_pacing"] >= 0


def test_a_quick_step_that_compared_nothing_runs_once_more(monkeypatch):
    """The re-run rule itself, without the machine: a first run whose turns were all invalid is run again."""
    import argparse

    import bench.__main__ as B

    runs = iter([{"compared": 0, "invalid_pct": 100.0, "turns": 5}, {"compared": 5, "invalid_pct": 0.0, "turns": 5},
                 {"compared": 4, "invalid_pct": 0.0, "turns": 4}])
    calls: list[int] = []

    def step(n, **kw):
        calls.append(n)
        return {"sessions": n, "sessions_streaming": n, "late_p99_ms": 1.0, "err_p99_ms": 0.1, **next(runs)}

    monkeypatch.setattr(B.H, "run_step", step)
    monkeypatch.setattr(B.report, "progress_line", lambda run: "")
    args = argparse.Namespace(quick=True, window=4.0, baseline_window=4.0, settle=1.0, grace=2.5, ramp=0.5, nice=0,
                              spread_ms=800, gc="realtime", event_stamp="kernel", repeats=0, quiet_wait=0)
    rows = B.run_series("harness", [5, 10], args, deadline=float("inf"), log=lambda line: None)
    assert calls == [5, 5, 10]
    assert [r["compared"] for r in rows] == [5, 4]
    assert rows[0]["rerun"] and [r["compared"] for r in rows[0]["all_runs"]] == [0, 5]
    assert "rerun" not in rows[1] and len(rows[1]["all_runs"]) == 1
    args.quick = False  # the full bench has its own rules (disturbed steps, failures below a passing count)
    runs = iter([{"compared": 0, "invalid_pct": 100.0, "turns": 5}])
    calls.clear()
    assert [r["compared"] for r in B.run_series("harness", [5], args, deadline=float("inf"), log=lambda line: None)] == [0]
    assert calls == [5]
