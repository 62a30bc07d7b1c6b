"""Scenario ``tools:`` validation, tool expectations, and tool metrics in summary / check / report."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.records import RecordWriter, TurnRecord
from harness.report.aggregate import group_stats, load_turns, write_tables
from harness.report.compare import compare
from harness.report.html import write_report
from harness.report.tools import per_tool
from harness.scenario import ScenarioError, parse_scenario
from harness.tools import Latency, ToolExpect, render_result

ROOT = Path(__file__).resolve().parent.parent


def _doc(tools, expect=None):
    return {"name": "t", "tools": tools, "conversation": [{"fixture": "cs_order_status", "expect": expect or {}}]}


def test_bad_tools_are_reported_with_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("""
name: bad-tools
tools:
  - name: "get order"
    parameters: {type: array}
    executor: {kind: mock, latency: {kind: lognormal, p50_ms: 200, p95_ms: 100}, error_rate: 2}
  - name: refund
    executor: {kind: http, url: ftp://x, headers_env: {Authorization: "not a var"}, timeot: 3s}
  - name: refund
    executor: {kind: magic}
  - {type: mcp, server_url: "localhost:9", allowed_tools: [lookup]}
conversation:
  - fixture: cs_order_status
    expect: {tool: get_weather, args: {city: {regex: "("}}}
""")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "validate", str(bad)], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2, proc
    err = proc.stdout + proc.stderr
    for field in ("tools[0].name", "tools[0].parameters", "tools[0].executor.latency.p95_ms",
                  "tools[0].executor.error_rate", "tools[1].executor.url", "tools[1].executor.headers_env.Authorization",
                  "tools[1].executor.timeot", "tools[2].name", "tools[2].executor.kind", "tools[3].server_label",
                  "tools[3].server_url", "conversation[0].expect.tool", "conversation[0].expect.args.city"):
        assert f"{bad}: {field}:" in err, (field, err)


def test_tools_and_expectations_parse():
    sc = parse_scenario(_doc([{"name": "get_order_status", "parameters": {"type": "object", "properties": {}},
                               "executor": {"kind": "mock", "result": {"id": "{order_id}"}, "latency": "250ms"}},
                              {"type": "mcp", "server_label": "crm", "server_url": "https://crm.example/mcp",
                               "allowed_tools": ["lookup_customer"], "authorization_env": "CRM_TOKEN"}],
                             {"tool": "lookup_customer", "args": {"id": {"regex": "[0-9]+"}}}), "x.yaml")
    assert sc.tools[0].executor.latency == Latency(kind="fixed", ms=250.0)
    assert sc.mcp_tools == [{"type": "mcp", "server_label": "crm", "server_url": "https://crm.example/mcp",
                             "require_approval": "never", "allowed_tools": ["lookup_customer"],
                             "authorization_env": "CRM_TOKEN"}]
    exp = sc.conversation[0].expect.tool
    assert exp.matches("lookup_customer", {"id": "42", "extra": 1})
    assert not exp.matches("lookup_customer", {"id": "4x2"}) and not exp.matches("other", {"id": "42"})
    assert not ToolExpect("a", {"x": 1}, "exact").matches("a", {"x": 1, "y": 2})
    assert ToolExpect("a", {"x": 1}, "exact").matches("a", {"x": "1"})
    assert render_result({"msg": "order {order_id} is {status}", "n": [1, "{missing}"]}, {"order_id": 7}) == \
        {"msg": "order 7 is {status}", "n": [1, "{missing}"]}
    with pytest.raises(ScenarioError, match="session.tools"):
        parse_scenario({**_doc([{"name": "a"}]), "session": {"tools": [{"type": "function", "name": "b"}]}}, "y.yaml")
    with pytest.raises(ScenarioError, match=r"session.tools\[0\]: a function tool needs an executor"):
        parse_scenario({**_doc([]), "session": {"tools": [{"type": "function", "name": "b"}]}}, "z.yaml")


def test_lognormal_latency_has_the_requested_p50_and_p95():
    lat = Latency(kind="lognormal", p50_ms=200, p95_ms=800)
    rng = random.Random(1)
    xs = sorted(lat.sample(rng) for _ in range(20000))
    assert xs[10000] == pytest.approx(200, rel=0.05) and xs[19000] == pytest.approx(800, rel=0.08)
    assert math.isinf(Latency(kind="never").sample(rng))


def _rec(i, expected, calls, first=None, reason="complete"):
    return TurnRecord(run_id="r", scenario="s", target="sim", session_id=f"s{i}", turn_index=0, t_speech_end=1e9 + i,
                      reason=reason, complete=reason == "complete", first_audio_ms=900.0, expected_tool=expected,
                      tool_calls=[{"kind": "function", "name": n, "arguments": {}, "ok": ok, "match": m, "exec_ms": 5.0}
                                  for n, ok, m in calls],
                      first_tool_call_ms=first, tool_exec_ms=5.0 if calls else None)


def test_precision_recall_check_gate_and_report_section(tmp_path):
    recs = [_rec(0, "get_order_status", [("get_order_status", True, True)], 700.0),
            _rec(1, "get_order_status", [("get_order_status", True, False)], 800.0),  # wrong arguments
            _rec(2, "reset_password", [("get_order_status", True, False)], 900.0),  # wrong tool
            _rec(3, "reset_password", [], None, reason="tool_timeout"),
            _rec(4, "none", [("reset_password", None, False)], 1000.0),  # called when it should not have
            _rec(5, "", [("reset_password", False, None)], 1100.0)]  # no expectation: not scored
    with RecordWriter(tmp_path / "turns.jsonl") as w:
        w.write_many(recs)
    df = load_turns(tmp_path)
    st = group_stats(df)
    assert st["tool_call_count"] == 5 and st["reason_tool_timeout"] == 1
    assert st["tool_precision"] == pytest.approx(1 / 4) and st["tool_recall"] == pytest.approx(1 / 4)
    assert st["first_tool_call_ms_count"] == 5 and st["first_tool_call_ms_p50"] == 900.0
    pt = per_tool(df).set_index("tool")
    assert pt.loc["get_order_status", "precision"] == pytest.approx(1 / 3)
    assert pt.loc["get_order_status", "recall"] == pytest.approx(1 / 2)
    assert pt.loc["reset_password", "recall"] == 0.0 and pt.loc["reset_password", "calls"] == 1

    def check(*ths):
        spec = tmp_path / "th.yaml"
        spec.write_text("thresholds:\n" + "".join(f"  - '{t}'\n" for t in ths))
        return subprocess.run([sys.executable, "-m", "harness.cli", "check", str(tmp_path), "--thresholds", str(spec)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)

    ok = check("first_tool_call_ms.p95 <= 1100", "tool_recall >= 0.2")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = check("first_tool_call_ms.p95 <= 1000", "tool_precision >= 0.9")
    assert bad.returncode == 1 and bad.stdout.count("\nFAIL ") == 2, bad.stdout + bad.stderr
    assert "first_tool_call_ms.p95" in bad.stdout.splitlines()[-1] and "tool_precision" in bad.stdout.splitlines()[-1]
    write_tables(tmp_path, df)
    turns_csv = pd.read_csv(tmp_path / "turns.csv")
    assert json.loads(turns_csv.loc[0, "tool_calls"])[0]["name"] == "get_order_status"
    assert turns_csv.loc[0, "first_tool_call_ms"] == 700.0 and turns_csv.loc[3, "reason"] == "tool_timeout"
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary.loc[0, "tool_precision"] == pytest.approx(0.25) and summary.loc[0, "tool_call_count"] == 5
    assert summary.loc[0, "first_tool_call_ms_p50"] == 900.0
    html = write_report(tmp_path).read_text()
    assert "id='tools'" in html and "Accuracy per tool" in html and "never answered" in html
    assert "<code>first_tool_call_ms</code>" in html and "<code>filler_audio_ms</code>" not in html


def test_compare_adds_tool_metrics_only_when_a_run_has_them():
    base = [_rec(i, "get_order_status", [("get_order_status", True, True)], 700.0 + i) for i in range(20)]
    slow = [_rec(i, "get_order_status", [("get_order_status", True, True)], 1400.0 + i) for i in range(20)]
    out = compare({"a": load_turns_of(base), "b": load_turns_of(slow)}, n_boot=200)
    row = out[(out.metric == "first_tool_call_ms") & (out.stat == "p95")].iloc[0]
    assert row.verdict == "regression" and row["diff"] == pytest.approx(700.0)
    plain = [_rec(i, "", [], None) for i in range(5)]
    assert "first_tool_call_ms" not in set(compare({"a": load_turns_of(plain), "b": load_turns_of(plain)},
                                                   n_boot=50).metric)


def load_turns_of(records):
    from harness.report.aggregate import typed_turns

    return typed_turns(records)
