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
        assert row["compared"] >= 1, "no turn could be joined with the simulator's ground truth"
        assert 0 <= row["err_p50_ms"] <= row["err_p99_ms"] < 1000
    for row in doc["harness"]:
        assert row["stamp_reads"] > 0 and row["stamp_p50_ms"] is not None  # kernel timestamps were on
        assert 0 <= row["invalid_pct"] <= 100
    s = doc["summary"]
    assert {"goals", "harness_max_sessions_pacing", "harness_max_sessions_meeting_goals"} <= s.keys()
    md = (tmp_path / "RESULTS.md").read_text()
    assert "## Harness against the simulator" in md and "## Conclusions" in md
    assert "wss://" in md and "wss" in s and s["wss"]["harness_max_sessions_pacing"] >= 0
