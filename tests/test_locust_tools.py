"""Tool calls in Locust's statistics, and -u on a distributed shaped run, through real Locust processes.

Each TOOL row is named after the tool and counts exactly the calls of turns.jsonl: its response time
is the tool's execution time, a tool error or a call that never got its result (tool_timeout) is a
failure. Locally and with a master and two workers (the rows reach the master with the same stats
reports that carry the turn records).
"""

from __future__ import annotations

import csv
import json
import subprocess
import textwrap
from collections import Counter
from pathlib import Path

from harness.exitcodes import EXIT_OK
from harness.locust_rows import tool_time_ms
from harness.records import read_records
from test_locust import LOCUST, ROOT, env, run_distributed, stats_rows

# The simulator recognises these utterances and calls the tools with arguments from the words
# (harness/simulator/replies/intents.yaml): set_temperature is never answered (the turn ends
# tool_timeout), request_refund always fails, get_order_status takes 300 ms, reset_password is an
# MCP call the simulator makes itself (400 ms on the ideal profile).
TOOLS_SCENARIO = """
name: tl
target: {embedded: true, profile: fast.yaml}
session:
  turn_detection: {type: server_vad, silence_duration_ms: 500}
tools:
  - name: set_temperature
    executor: {kind: mock, latency: never}
  - name: request_refund
    executor: {kind: mock, latency: 100, error_rate: 1.0, error: {error: billing system unavailable}}
  - name: get_order_status
    parameters: {type: object, properties: {order_id: {type: string}}}
    executor: {kind: mock, result: {status: shipped}, latency: 300}
  - {type: mcp, server_label: crm, server_url: "https://crm.example/mcp", allowed_tools: [reset_password]}
conversation:
{turns}
audio: {trailing_silence_ms: 200}
load:
  users: 1
  duration: 6s
  stop_timeout: 30s  # a bound: the session (about 20 s) ends first, then the test
  turn_timeout: 2s
  max_pacing_lag_ms: 2000  # a busy 2-core CI box must not turn the verdict into "overloaded"
thresholds: ['completeness >= 0.2']
"""


TURNS = ("car_temperature", "cs_double_charge", "cs_order_status", "cs_reset_password")


def tools_scenario(tmp_path: Path, shape: str = "", turns: tuple[str, ...] = TURNS) -> Path:
    """The scenario above (these turns) beside a copy of the ideal profile streaming replies 8x real time."""
    ideal = (ROOT / "scenarios" / "profiles" / "ideal.yaml").read_text(encoding="utf-8")
    fast = ideal.replace("audio_pace: {dist: fixed, value: 2.0}", "audio_pace: {dist: fixed, value: 8.0}")
    assert fast != ideal
    (tmp_path / "fast.yaml").write_text(fast, encoding="utf-8")
    text = textwrap.dedent(TOOLS_SCENARIO).replace(
        "{turns}", "\n".join(f"  - {{fixture: {t}, pause_ms: 100}}" for t in turns))
    if shape:
        text = text.replace("  users: 1\n", shape)
    sc = tmp_path / "tools.yaml"
    sc.write_text(text, encoding="utf-8")
    return sc


def failures(csv_path: Path) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    with open(csv_path, newline="") as fh:
        for r in csv.DictReader(fh):
            out.setdefault((r["Method"], r["Name"]), []).append(r["Error"])
    return out


def check_tool_rows(prefix: Path, out: Path) -> list[dict]:
    """Locust's TOOL rows against the tool calls of turns.jsonl: counts, failures and mean time per tool."""
    turns = list(read_records(out / "turns.jsonl"))
    calls = [(t, c) for t in turns for c in t["tool_calls"]]
    rows = stats_rows(Path(f"{prefix}_stats.csv"))
    tool_rows = {name.split(":", 1)[1]: r for (kind, name), r in rows.items() if kind == "TOOL"}
    by_name = Counter(c["name"] for _, c in calls)
    assert {n: int(r["Request Count"]) for n, r in tool_rows.items()} == dict(by_name), (tool_rows, by_name)
    failed = Counter(c["name"] for _, c in calls if c["ok"] is False or tool_time_ms(c) is None)
    assert {n: int(r["Failure Count"]) for n, r in tool_rows.items()} == {n: failed[n] for n in by_name}
    for name, row in tool_rows.items():  # the mean is exact in Locust (its percentiles are bucketed)
        times = [tool_time_ms(c) for _, c in calls if c["name"] == name and tool_time_ms(c) is not None]
        if times:
            assert abs(float(row["Average Response Time"]) - sum(times) / len(times)) < 0.01, (name, row, times)
    return [c for _, c in calls]


def test_local_run_has_a_tool_row_per_function_with_execution_time_and_failures(tmp_path):
    """A function that never answers (tool_timeout), one that answers in 300 ms, an MCP call (400 ms)."""
    sc = tools_scenario(tmp_path, turns=("car_temperature", "cs_order_status", "cs_reset_password"))
    out = tmp_path / "out"
    run = subprocess.run(LOCUST + ["--headless", "--scenario", str(sc), "-u", "1", "-r", "1", "-t", "4s",
                                   "--csv", str(tmp_path / "run"), "--voiceload-out", str(out), "--only-summary"],
                         cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == EXIT_OK, run.stderr[-3000:]
    calls = check_tool_rows(tmp_path / "run", out)
    by_name = {c["name"]: c for c in calls}  # one session: each tool called once
    assert set(by_name) == {"set_temperature", "get_order_status", "reset_password"}, calls
    assert 300 <= by_name["get_order_status"]["exec_ms"] < 650 and by_name["get_order_status"]["ok"] is True
    assert by_name["reset_password"]["kind"] == "mcp" and 390 <= tool_time_ms(by_name["reset_password"]) < 650
    assert by_name["set_temperature"]["ok"] is None and by_name["set_temperature"]["exec_ms"] is None
    [timeout_turn] = [t for t in read_records(out / "turns.jsonl") if t["tool_calls"]
                      and t["tool_calls"][0]["name"] == "set_temperature"]
    assert timeout_turn["reason"] == "tool_timeout"
    fails = failures(tmp_path / "run_failures.csv")
    assert fails[("TOOL", "tl:set_temperature")] == ["ToolFailed('tool_timeout')"]
    assert ("TOOL", "tl:get_order_status") not in fails and ("TOOL", "tl:reset_password") not in fails


def test_master_and_two_workers_rescale_a_shaped_scenario_with_u_and_count_tool_calls_once(tmp_path):
    """A soak ramping to 4 users run with -u 2 by a master and two workers peaks at 2 users."""
    sc = tools_scenario(tmp_path, shape="  users: 4\n  shape: {type: soak, users: 4, ramp: 2s}\n",
                        turns=("cs_double_charge", "cs_order_status"))  # a shorter session: one of each outcome
    out = tmp_path / "out"
    run_distributed(sc, out, "4s", ["--csv", str(tmp_path / "dist")], users=2)  # exit code 0 (pass)
    with open(tmp_path / "dist_stats_history.csv", newline="") as fh:
        users = [int(r["User Count"]) for r in csv.DictReader(fh)]
    assert max(users) == 2, users  # the master's running user count, once a second
    meta = json.loads((out / "run.json").read_text())
    assert meta["load"]["peak_users"] == 2 and meta["verdict"]["exit_code"] == EXIT_OK
    assert len(meta["workers"]["seen"]) == 2 and meta["workers"]["missing"] == []
    turns = list(read_records(out / "turns.jsonl"))
    assert {t["worker"] for t in turns} == set(meta["workers"]["seen"])  # one user on each worker
    assert len({t["session_id"] for t in turns}) >= 2
    keys = [(t["session_id"], t["turn_index"]) for t in turns]
    assert len(keys) == len(set(keys))  # every record exactly once
    calls = check_tool_rows(tmp_path / "dist", out)
    assert Counter(c["name"] for c in calls)["get_order_status"] >= 2 and any(c["ok"] is False for c in calls)
    fails = failures(tmp_path / "dist_failures.csv")  # an executor's error, once per distinct message
    assert fails[("TOOL", "tl:request_refund")] == ["ToolFailed('tool error: billing system unavailable')"]


def test_tool_rows_time_and_failure_of_each_kind_of_call():
    """The rows one turn fires: MCP failures keep their time, a call cut by a disconnect says so."""
    from types import SimpleNamespace

    from harness.locust_rows import tool_rows
    from harness.records import TurnRecord

    fired: list[dict] = []
    sc = SimpleNamespace(name="s", targets=[object(), object()])  # two targets: rows name theirs
    rec = TurnRecord(target="east", reason="disconnected", tool_calls=[
        {"kind": "function", "name": "lookup", "exec_ms": 12.5, "ok": True},
        {"kind": "function", "name": "refund", "exec_ms": 3.0, "ok": False,
         "error": json.dumps({"error": "HTTP 503", "body": "x" * 300})},
        {"kind": "mcp", "name": "reset", "exec_ms": None, "ok": False, "error": "mcp server down",
         "args_done_ms": 700.0, "result_ms": 950.5},
        {"kind": "function", "name": "slow", "exec_ms": None, "ok": None, "args_done_ms": 690.0}])
    tool_rows(lambda **kw: fired.append(kw), sc, rec)
    got = [(f["request_type"], f["name"], f["response_time"], f["exception"] and str(f["exception"])) for f in fired]
    assert got == [("TOOL", "s:lookup@east", 12.5, None),
                   ("TOOL", "s:refund@east", 3.0, "tool error: HTTP 503"),
                   ("TOOL", "s:reset@east", 250.5, "tool error: mcp server down"),
                   ("TOOL", "s:slow@east", None, "no result: disconnected")]
