"""check.py: threshold syntax, evaluation with summarize's numbers, table, JUnit XML, exit codes."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.records import RecordWriter, TurnRecord
from harness.report.aggregate import load_turns, summarize
from harness.report.check import (CheckResult, Threshold, evaluate, format_table, parse_threshold, run_check,
                                  write_junit)

EAST = [800.0, 900.0, 1000.0, 1100.0, 1600.0]
SWEDEN = [500.0, 550.0, 600.0]


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    with RecordWriter(tmp_path / "turns.jsonl") as w:
        for v in EAST:
            w.write(TurnRecord(target="eastus2", first_audio_ms=v, vad_ms=400.0, wer=0.1, complete=True,
                               reason="complete"))
        w.write(TurnRecord(target="eastus2", reason="timeout", complete=False))
        for v in SWEDEN:
            w.write(TurnRecord(target="swedencentral", first_audio_ms=v, vad_ms=300.0, complete=True,
                               reason="complete"))
    (tmp_path / "run.json").write_text(json.dumps({
        "targets": [{"name": "eastus2"}, {"name": "swedencentral"}],
        "thresholds": ["first_audio_ms.p95 <= 2000", "completeness >= 0.5"]}))
    return tmp_path


@pytest.mark.parametrize("text,expected", [
    ("first_audio_ms.p95 <= 1200", Threshold("first_audio_ms", "p95", "<=", 1200.0)),
    ("completeness >= 0.99", Threshold("completeness", None, ">=", 0.99)),
    ("wer.mean<=0.15", Threshold("wer", "mean", "<=", 0.15)),
    ("vad_ms.p50 < 700", Threshold("vad_ms", "p50", "<", 700.0)),
    ("count >= 10", Threshold("count", None, ">=", 10.0)),
    (" eastus2 : first_audio_ms.p95 <= 1.5e3 ", Threshold("first_audio_ms", "p95", "<=", 1500.0, "eastus2")),
    ("first_audio_ms.count > 3", Threshold("first_audio_ms", "count", ">", 3.0)),
    ("reason_timeout == 0", Threshold("reason_timeout", None, "==", 0.0)),
    ("cancel_ms.min > -5", Threshold("cancel_ms", "min", ">", -5.0)),
])
def test_parse(text: str, expected: Threshold) -> None:
    th = parse_threshold(text)
    assert th == expected
    assert parse_threshold(str(th)) == th


@pytest.mark.parametrize("text,part", [
    ("first_audio_ms.p95 1200", "operator"),
    ("first_audio_ms.p95 <= fast", "'fast'"),
    ("first_audio_ms.p42 <= 1", "'p42'"),
    ("first_audio.p95 <= 1", "'first_audio'"),
    ("first_audio_ms <= 1", "needs a stat"),
    ("completeness.p95 >= 1", "'completeness'"),
    ("east us:first_audio_ms.p95 <= 1", "'east us'"),
    ("<= 5", "no metric"),
    ("a <= b <= c", "more than one"),
    ("", "empty"),
])
def test_parse_errors_name_the_bad_part(text: str, part: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_threshold(text)
    assert part in str(exc.value)


def test_evaluate_uses_summarize_numbers(run_dir: Path) -> None:
    df = load_turns(run_dir)
    res = evaluate(df, ["first_audio_ms.p95 <= 1200", "completeness >= 0.9", "eastus2:count >= 6"])
    assert [(r.threshold.metric, r.target, r.passed) for r in res] == [
        ("first_audio_ms", "eastus2", False), ("first_audio_ms", "swedencentral", True),
        ("completeness", "eastus2", False), ("completeness", "swedencentral", True), ("count", "eastus2", True)]
    s = summarize(df, by=("target",)).set_index("target")
    assert res[0].actual == s.loc["eastus2", "first_audio_ms_p95"] == pytest.approx(np.percentile(EAST, 95))
    assert res[2].actual == pytest.approx(5 / 6)
    assert "first_audio_ms.p95" in res[0].detail and "1200" in res[0].detail


def test_no_data_fails(run_dir: Path) -> None:
    df = load_turns(run_dir)
    res = evaluate(df, ["cancel_ms.p95 <= 500", "swedencentral:wer.mean <= 0.2", "westus:first_audio_ms.p50 < 1"])
    assert all(not r.passed and r.detail == "no data" and r.actual is None for r in res)
    empty = evaluate(pd.DataFrame(), ["first_audio_ms.p95 <= 1200", "count >= 1"])
    assert [(r.target, r.passed, r.detail) for r in empty] == [("", False, "no data"), ("", False, empty[1].detail)]
    assert empty[1].actual == 0


def test_evaluate_raw_records_like_locust(run_dir: Path) -> None:
    from harness.records import read_records

    raw = pd.DataFrame(list(read_records(run_dir / "turns.jsonl")))
    res = evaluate(raw, [parse_threshold("swedencentral:first_audio_ms.p50 <= 600")])
    assert res[0].passed and res[0].actual == 550.0
    assert "(actual 550.0)" in f"{res[0].threshold} (actual {res[0].actual})"


def test_format_table(run_dir: Path) -> None:
    res = evaluate(load_turns(run_dir), ["first_audio_ms.p95 <= 1200"])
    text = format_table(res)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["RESULT", "TARGET", "THRESHOLD", "ACTUAL"]
    assert lines[1].startswith("FAIL") and lines[2].startswith("PASS")
    assert lines[1].index("first_audio_ms") == lines[2].index("first_audio_ms")  # aligned
    assert "1 of 2 breached" in lines[-1]
    assert format_table([]) == "no thresholds"


def test_junit(run_dir: Path, tmp_path: Path) -> None:
    res = evaluate(load_turns(run_dir), ["first_audio_ms.p95 <= 1200", "vad_ms.p50 < 700", "cancel_ms.p50 < 1"])
    path = write_junit(res, tmp_path / "out" / "junit.xml")
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "voiceload.thresholds"
    assert suite.get("tests") == "6" and suite.get("failures") == "3"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases][:2] == ["first_audio_ms.p95 <= 1200 [eastus2]",
                                                   "first_audio_ms.p95 <= 1200 [swedencentral]"]
    fail = cases[0].find("failure")
    assert fail is not None
    msg = fail.get("message")
    assert "first_audio_ms.p95" in msg and "eastus2" in msg and "1200" in msg
    assert f"{np.percentile(EAST, 95):.1f}" in msg
    assert cases[1].find("failure") is None
    assert "no data" in cases[-1].find("failure").get("message")


def test_run_check_exit_codes(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert run_check(run_dir) == 0  # thresholds from run.json
    assert "within limits" in capsys.readouterr().out
    junit = tmp_path / "j.xml"
    assert run_check(run_dir, ["eastus2:first_audio_ms.p50 <= 900"], junit) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "eastus2" in out and junit.exists()
    assert run_check(run_dir, ["first_audio_ms.p99 <= nope"]) == 2
    assert run_check(run_dir, []) == 0
    # a target listed in run.json without any turn fails a per-target gate
    meta = json.loads((run_dir / "run.json").read_text())
    meta["targets"].append({"name": "westus"})
    (run_dir / "run.json").write_text(json.dumps(meta))
    assert run_check(run_dir) == 1
    assert "westus" in capsys.readouterr().out


def test_check_result_is_typed() -> None:
    r = CheckResult(parse_threshold("count >= 1"), "", 3.0, True, "ok")
    assert r.name == "count >= 1" and not math.isnan(r.actual)
