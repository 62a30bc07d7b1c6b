"""compare.py: bootstrap correctness, verdicts (regression / improvement / noise), run comparison files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.records import RecordWriter, TurnRecord
from harness.report.aggregate import typed_turns
from harness.report.compare import (VERDICTS, bootstrap_percentile, compare, compare_runs, compare_targets,
                                    load_groups, verdict)


def frame(values, target: str = "t", complete=None) -> pd.DataFrame:
    complete = [True] * len(values) if complete is None else complete
    return typed_turns([{"target": target, "first_audio_ms": float(v), "vad_ms": float(v) / 2, "complete": c,
                         "reason": "complete" if c else "timeout"} for v, c in zip(values, complete)])


def lognormal(seed: int, n: int = 200, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(800), 0.35, n) * scale


@pytest.mark.parametrize("q", [50, 95, 99])
def test_order_statistic_bootstrap_matches_brute_force(q: float) -> None:
    x = lognormal(5, n=150)
    fast = bootstrap_percentile(x, q, 20_000, np.random.default_rng(1))
    idx = np.random.default_rng(2).integers(0, x.size, (20_000, x.size))
    brute = np.percentile(x[idx], q, axis=1)
    levels = [2.5, 10, 25, 50, 75, 90, 97.5]
    scale = np.percentile(brute, 97.5) - np.percentile(brute, 2.5)
    assert np.allclose(np.percentile(fast, levels), np.percentile(brute, levels), atol=0.05 * scale)
    assert fast.mean() == pytest.approx(brute.mean(), rel=0.01)


def test_bootstrap_edge_cases() -> None:
    rng = np.random.default_rng(0)
    assert np.isnan(bootstrap_percentile(np.array([]), 50, 10, rng)).all()
    assert (bootstrap_percentile(np.array([7.0]), 95, 10, rng) == 7.0).all()
    b = bootstrap_percentile(np.array([1.0, 2.0, np.nan]), 50, 1000, rng)
    assert set(np.unique(b)) <= {1.0, 1.5, 2.0}


def test_shift_up_is_regression_and_down_is_improvement() -> None:
    base = frame(lognormal(1, n=1000))
    up = compare({"base": base, "new": frame(lognormal(2, n=1000, scale=1.15))}, metrics=("first_audio_ms",))
    down = compare({"base": base, "new": frame(lognormal(2, n=1000, scale=0.85))}, metrics=("first_audio_ms",))
    assert list(up["verdict"]) == ["regression", "regression"]
    assert list(down["verdict"]) == ["improvement", "improvement"]
    row = up.iloc[0]
    assert row["ci_low"] > 0 and row["diff"] == pytest.approx(row["value"] - row["baseline_value"])
    assert row["value"] == pytest.approx(np.percentile(lognormal(2, n=1000, scale=1.15), 50))


def test_shift_detected_at_n200_for_most_seeds() -> None:
    hits = sum(compare({"a": frame(lognormal(s)), "b": frame(lognormal(s + 1000, scale=1.15))},
                       metrics=("first_audio_ms",), stats=("p50",))["verdict"].iloc[0] == "regression"
               for s in range(20))
    assert hits >= 15


def test_same_distribution_is_no_significant_change() -> None:
    """Each verdict is a 95 % CI test: per metric and stat, ≥ 95 % of 40 same-distribution seeds stay quiet."""
    t = time.perf_counter()
    quiet: dict[tuple[str, str], int] = {}
    for seed in range(40):
        c = compare({"a": frame(lognormal(seed)), "b": frame(lognormal(seed + 10_000))},
                    metrics=("first_audio_ms", "vad_ms", "completeness"))
        for r in c.itertuples():
            quiet[r.metric, r.stat] = quiet.get((r.metric, r.stat), 0) + (r.verdict == "no significant change")
    assert len(quiet) == 5
    for key, n in quiet.items():
        assert n >= 38, (key, n)
    assert time.perf_counter() - t < 10


def test_practical_minimum_suppresses_tiny_but_certain_changes() -> None:
    base = frame(lognormal(1, n=20_000))
    c = compare({"a": base, "b": frame(lognormal(2, n=20_000, scale=1.03))}, metrics=("first_audio_ms",),
                stats=("p50",))
    assert c["ci_low"].iloc[0] > 0 and c["verdict"].iloc[0] == "no significant change"
    c = compare({"a": base, "b": frame(lognormal(2, n=20_000, scale=1.03))}, metrics=("first_audio_ms",),
                stats=("p50",), min_rel=0.01, min_abs=5)
    assert c["verdict"].iloc[0] == "regression"
    # the 10 ms floor: +8% on a 50 ms metric is not practically significant
    assert verdict("vad_ms", 4.0, 0.08, 2.0, 6.0) == "no significant change"
    assert verdict("wer", 0.02, 0.2, 0.01, 0.03) == "regression"
    assert verdict("audio_rtf", -0.3, -0.3, -0.4, -0.2) == "regression"  # higher RTF is better


def test_completeness_direction() -> None:
    vals = lognormal(3, n=1000)
    good = frame(vals, complete=[i % 100 != 0 for i in range(1000)])  # 99 %
    bad = frame(vals, complete=[i % 10 != 0 for i in range(1000)])  # 90 %
    c = compare({"a": good, "b": bad}, metrics=("completeness",))
    assert c["stat"].iloc[0] == "rate" and c["verdict"].iloc[0] == "regression"
    assert c["diff"].iloc[0] == pytest.approx(-0.09)
    c = compare({"a": bad, "b": good}, metrics=("completeness",))
    assert c["verdict"].iloc[0] == "improvement"


def test_seeded_and_no_data() -> None:
    g = {"a": frame(lognormal(1)), "b": frame(lognormal(2))}
    assert compare(g).equals(compare(g))
    c = compare({"a": frame(lognormal(1)), "b": frame([])}, metrics=("first_audio_ms",))
    assert set(c["verdict"]) == {"no data"} and set(c["verdict"]) <= set(VERDICTS)
    assert compare({"only": frame([1.0])}).empty
    with pytest.raises(ValueError, match="baseline"):
        compare(g, baseline="zzz")


def _write_run(d: Path, run_id: str, targets: dict[str, float], n: int = 300) -> Path:
    d.mkdir(parents=True)
    with RecordWriter(d / "turns.jsonl") as w:
        for name, scale in targets.items():
            for i, v in enumerate(lognormal(sum(map(ord, name)), n=n, scale=scale)):
                w.write(TurnRecord(run_id=run_id, target=name, first_audio_ms=float(v), vad_ms=float(v) / 2,
                                   server_response_ms=float(v) / 2, complete=True, reason="complete",
                                   t_speech_end=1_795_000_000.0 + i))
    (d / "run.json").write_text(json.dumps({"run_id": run_id, "targets": [{"name": t} for t in targets]}))
    return d


def test_compare_runs_and_targets(tmp_path: Path) -> None:
    one = _write_run(tmp_path / "one", "run-1", {"swedencentral": 1.0, "eastus2": 1.3})
    two = _write_run(tmp_path / "two", "run-2", {"eastus2": 1.0})
    assert list(load_groups([one])) == ["swedencentral", "eastus2"]  # run.json order, first = baseline
    assert list(load_groups([one, two])) == ["run-1/swedencentral", "run-1/eastus2", "run-2"]
    path = compare_runs([one], tmp_path / "cmp")
    assert path.name == "compare.html" and (tmp_path / "cmp" / "compare.csv").exists()
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    row = table[(table["metric"] == "first_audio_ms") & (table["stat"] == "p50")].iloc[0]
    assert row["group"] == "eastus2" and row["baseline"] == "swedencentral" and row["verdict"] == "regression"
    html = path.read_text()
    assert "regression" in html and "<svg" in html and "swedencentral" in html and "<script" not in html
    df = typed_turns(pd.concat([frame(lognormal(1), "x"), frame(lognormal(2), "y")]))
    assert set(compare_targets(df)["group"]) == {"y"}
    assert compare_runs([two], tmp_path / "single").exists()  # one group: a page that says so
