"""aggregate.py: typed loading, percentiles equal numpy's, counts, invalid turns, torn lines, tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.records import COLUMNS, REASONS, RecordWriter, SessionRecord, TurnRecord
from harness.report.aggregate import (METRICS, STATS, load_sessions, load_turns, summarize, summary_by_turn,
                                      summary_columns, typed_turns, write_tables)

LAT = [100.0, 200.0, 300.0, 400.0, 1000.0, 120.0, 250.0, 330.0, 90.0, 610.0]


def _records() -> list[TurnRecord]:
    recs = []
    for i, fa in enumerate(LAT):  # target a: 10 valid complete turns with known latencies
        recs.append(TurnRecord(run_id="r", scenario="s", target="a", session_id=f"s{i}", turn_index=i % 2,
                               fixture=f"f{i % 2}", t_speech_end=1_795_000_000.0 + i, first_audio_ms=fa,
                               vad_ms=fa / 2, complete=True, reason="complete", active_sessions=i + 1))
    # invalid turn with a huge latency: counted, never in percentiles
    recs.append(TurnRecord(target="a", scenario="s", first_audio_ms=99_999.0, vad_ms=99_999.0, complete=True,
                           reason="complete", valid=False, t_speech_end=1_795_000_100.0))
    # failures on target a
    recs.append(TurnRecord(target="a", scenario="s", reason="timeout", complete=False, vad_ms=400.0,
                           expectations=[{"name": "reason", "ok": False, "detail": "x"}], expectations_ok=False))
    recs.append(TurnRecord(target="a", scenario="s", reason="no_response", complete=False,
                           expectations=[{"name": "reason", "ok": True, "detail": "x"}]))
    # target b: 3 turns
    for fa in (500.0, 700.0, None):
        recs.append(TurnRecord(target="b", scenario="s", first_audio_ms=fa, complete=fa is not None,
                               reason="complete" if fa is not None else "disconnected"))
    return recs


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    with RecordWriter(tmp_path / "turns.jsonl") as w:
        w.write_many(_records())
    with open(tmp_path / "turns.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"target":"a","first_audio_ms":12')  # torn last line from a crash
    with RecordWriter(tmp_path / "sessions.jsonl") as w:
        w.write(SessionRecord(target="a", session_id="s0", outcome="ok", connect_ms=120.0))
        w.write(SessionRecord(target="a", session_id="s1", outcome="rejected", http_status=429, backoff_ms=2000))
    return tmp_path


def test_load_turns_types_and_torn_line(run_dir: Path) -> None:
    df = load_turns(run_dir)
    assert len(df) == len(_records())  # torn line skipped
    assert load_turns(run_dir / "turns.jsonl").equals(df)
    for m in METRICS:
        assert df[m].dtype == np.float64, m
    assert df["first_audio_ms"].isna().sum() == 3  # None -> NaN
    assert df["valid"].dtype == bool and df["complete"].dtype == bool and df["expectations_ok"].dtype == bool
    assert isinstance(df["reason"].dtype, pd.CategoricalDtype) and isinstance(df["target"].dtype, pd.CategoricalDtype)
    assert list(df["reason"].cat.categories[: len(REASONS)]) == list(REASONS)
    assert str(df["time"].dtype).startswith("datetime64") and df["time"].iloc[0] == pd.Timestamp(
        1_795_000_000.0, unit="s", tz="UTC")
    assert df["time"].isna().sum() == 5  # t_speech_end missing (0) -> NaT
    assert isinstance(df["marks"].iloc[0], dict) and isinstance(df["expectations"].iloc[0], list)


def test_percentiles_equal_numpy_and_invalid_excluded(run_dir: Path) -> None:
    s = summarize(load_turns(run_dir)).set_index("target")
    a = s.loc["a"]
    for stat, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert a[f"first_audio_ms_{stat}"] == pytest.approx(np.percentile(LAT, q), abs=1e-9)
    assert a["first_audio_ms_max"] == max(LAT) and a["first_audio_ms_min"] == min(LAT)
    assert a["first_audio_ms_mean"] == pytest.approx(np.mean(LAT))
    assert a["first_audio_ms_count"] == len(LAT)
    vads = [x / 2 for x in LAT] + [400.0]
    assert a["vad_ms_p95"] == pytest.approx(np.percentile(vads, 95))
    assert a["count"] == 13 and a["valid"] == 12 and a["invalid"] == 1
    assert math.isnan(a["cancel_ms_p50"]) and a["cancel_ms_count"] == 0


def test_completeness_reasons_expectations(run_dir: Path) -> None:
    s = summarize(load_turns(run_dir)).set_index("target")
    a, b = s.loc["a"], s.loc["b"]
    # the no_response turn was the outcome its expectation asked for (issue 11 item 13): not a failure
    assert a["complete"] == 10 and a["interrupted_as_expected"] == 1
    assert a["failures"] == 1 and a["completeness"] == pytest.approx(11 / 12)
    assert a["reason_complete"] == 11 and a["reason_timeout"] == 1 and a["reason_no_response"] == 1
    assert sum(a[f"reason_{r}"] for r in REASONS) == a["count"]
    assert a["expectations_checked"] == 2 and a["expectations_failed"] == 1
    assert a["expectations_pass_rate"] == pytest.approx(0.5)
    assert b["completeness"] == pytest.approx(2 / 3) and b["reason_disconnected"] == 1
    assert math.isnan(b["expectations_pass_rate"])
    # include_invalid puts the overloaded turn back
    a2 = summarize(load_turns(run_dir), include_invalid=True).set_index("target").loc["a"]
    assert a2["first_audio_ms_max"] == 99_999.0 and a2["completeness"] == pytest.approx(12 / 13)


def test_summary_by_turn_and_grouping(run_dir: Path) -> None:
    df = load_turns(run_dir)
    t = summary_by_turn(df)
    assert list(t.columns[:3]) == ["target", "turn_index", "fixture"]
    row = t[(t["target"] == "a") & (t["turn_index"] == 1) & (t["fixture"] == "f1")].iloc[0]
    assert row["first_audio_ms_p50"] == pytest.approx(np.percentile(LAT[1::2], 50))
    assert list(summarize(df, by=("scenario",))["scenario"]) == ["s"]


def test_write_tables_stable_columns(run_dir: Path) -> None:
    paths = write_tables(run_dir)
    turns = pd.read_csv(paths["turns.csv"])
    assert list(turns.columns) == list(COLUMNS) + ["time"]
    assert len(turns) == len(_records())
    assert json.loads(turns["expectations"].iloc[11])[0]["name"] == "reason"
    summary = pd.read_csv(paths["summary.csv"])
    assert list(summary.columns) == summary_columns(("target", "scenario"))
    assert summary_columns(("target",))[1:10] == ["count", "valid", "invalid", "complete", "failures",
                                                   "completeness", "expectations_checked", "expectations_failed",
                                                   "expectations_pass_rate"]
    assert [c for c in summary.columns if c.startswith("first_audio_ms_")] == [f"first_audio_ms_{s}" for s in STATS]


def test_empty_and_raw_inputs(tmp_path: Path) -> None:
    (tmp_path / "turns.jsonl").write_text("\n")
    df = load_turns(tmp_path)
    assert len(df) == 0 and set(COLUMNS) <= set(df.columns)
    s = summarize(df)
    assert len(s) == 0 and list(s.columns) == summary_columns(("target", "scenario"))
    assert load_turns(tmp_path / "missing").empty
    paths = write_tables(tmp_path)
    assert pd.read_csv(paths["turns.csv"]).columns.tolist() == list(COLUMNS) + ["time"]
    # a raw frame (as Locust's breakpoint hook builds it) and plain dicts are typed the same way
    raw = pd.DataFrame([TurnRecord(target="x", first_audio_ms=5.0, complete=True, reason="complete").to_dict()])
    assert typed_turns(raw)["first_audio_ms"].iloc[0] == 5.0
    assert summarize([{"target": "x", "first_audio_ms": 7}])["first_audio_ms_p50"].iloc[0] == 7.0


def test_nan_literal_line_is_read(tmp_path: Path) -> None:
    (tmp_path / "turns.jsonl").write_text('{"target":"a","first_audio_ms":NaN,"vad_ms":3}\n{"target":"a"}\n')
    df = load_turns(tmp_path)
    assert len(df) == 2 and math.isnan(df["first_audio_ms"].iloc[0]) and df["vad_ms"].iloc[0] == 3.0


def test_load_sessions(run_dir: Path) -> None:
    s = load_sessions(run_dir)
    assert len(s) == 2 and str(s["http_status"].dtype) == "Int64"
    assert s.loc[s["outcome"] == "rejected", "http_status"].iloc[0] == 429
    assert s["backoff_ms"].dtype == np.float64
    assert load_sessions(run_dir / "nope").empty
