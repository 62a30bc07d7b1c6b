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
{turns}
audio: {{trailing_silence_ms: 100}}
load:
  users: {users}
  spawn_rate: 1000
  duration: {duration}
  stop_timeout: 5s
  turn_timeout: 5s
  max_pacing_lag_ms: 250  # these tests judge quotas, not timing, on a busy CI machine
{more}
"""
TURN = "  - {fixture: %s, pause_ms: 100, manual_commit: true}"


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
  stop_timeout: 12s  # callers that arrived in time finish, even those still waiting for budget at the end
  turn_timeout: 5s
  max_pacing_lag_ms: 2000  # the Locust verdict judges overload too: a loaded CI box is not the subject here
  shape: {{type: arrivals, rate: 6000/min, max_concurrent: {callers}, callers: {callers}, seed: 7}}
"""


def arrivals_scenario(path: Path, url: str, *, callers: int, per_window: int, window_s: float) -> Path:
    path.write_text(textwrap.dedent(ARRIVALS.format(name=path.stem, url=url, callers=callers, per_window=per_window,
                                                    window_s=window_s)), encoding="utf-8")
    return path


def manual_scenario(path: Path, url: str, *, users: int, duration: str, limits: str = "",
                    fixtures: tuple[str, ...] = ("car_call_mom",), more: str = "") -> Path:
    turns = "\n".join(TURN % f for f in fixtures)
    path.write_text(textwrap.dedent(MANUAL).format(name=path.stem, url=url, users=users, duration=duration,
                                                   limits=limits, turns=turns, more=more), encoding="utf-8")
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
        sc = manual_scenario(tmp_path / "paced.yaml", srv.url, users=12, duration="3s",
                             limits="  limits: {connections_per_minute: 5, window_s: 1.0}")
        run = run_cli("run", str(sc), "--out", str(tmp_path / "paced"))
        assert run.returncode == 0, run.stderr[-3000:]
        assert srv.refused == [] and len(srv.accepted) >= 12 and srv.max_in_window() == 5
        assert srv.turns == len(srv.accepted), srv.errors
    sessions = list(read_records(tmp_path / "paced" / "sessions.jsonl"))
    ok = [s for s in sessions if s["outcome"] == "ok"]
    assert len(ok) == len(srv.accepted) and all(s["turns_recorded"] == 1 for s in ok)
    # Callers still waiting for budget when the run ended were waiting, not refused: no 429, no attempt.
    assert all(s["outcome"] == "aborted" and s["error"] == "stopped while waiting for connection budget"
               and s["http_status"] is None for s in sessions if s["outcome"] != "ok")
    assert all(s["connect_attempts"] == 1 and s["throttled_attempts"] == 0 for s in sessions)
    waited = sorted(s["budget_wait_ms"] for s in ok)
    assert waited[:5] == [0.0] * 5 and waited[-1] > 1500, waited  # the third batch waited two windows
    meta = json.loads((tmp_path / "paced" / "run.json").read_text())
    assert list(meta["quota"].values())[0]["granted"] == len(ok)

    with qs.QuotaServer(connections=5, window_s=1.0) as srv:
        sc = manual_scenario(tmp_path / "blind.yaml", srv.url, users=8, duration="2s")
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


def run_distributed(sc: Path, out: Path, extra: list[str] | None = None) -> str:
    """A headless Locust master with two workers (tests/test_locust.py) to its end; the master's output."""
    import test_locust as tl

    return tl.run_distributed(sc, out, "4s", extra, users=None)  # -u would cap max_concurrent


def _connected_at(sessions: list[dict]) -> list[float]:
    """Wall-clock instant each session's connection opened (start + budget wait + backoff + handshake)."""
    return sorted(s["t_start"] + (s["budget_wait_ms"] + s["backoff_ms"] + (s["connect_ms"] or 0)) / 1000
                  for s in sessions if s["outcome"] == "ok")


def test_locust_master_and_two_workers_share_one_connection_budget(tmp_path):
    """40 arriving callers (open loop, all within ~0.5 s) against a loopback server allowing 10 new
    connections per 1 s window, through a Locust master and two workers: the master hands out the
    budget, the server never refuses, both workers connect, and the ramp is what plan predicts."""
    import test_locust as tl

    with qs.QuotaServer(connections=10, window_s=1.0) as srv:
        sc = arrivals_scenario(tmp_path / "dist.yaml", srv.url, callers=40, per_window=10, window_s=1.0)
        out = tmp_path / "out"
        m_out = run_distributed(sc, out, ["--csv", str(tmp_path / "dist")])
        assert srv.refused == [] and len(srv.accepted) == 40 and srv.max_in_window() == 10, srv.refused
    sessions = list(read_records(out / "sessions.jsonl"))
    assert len(sessions) == 40 and {s["outcome"] for s in sessions} == {"ok"}
    assert len({s["worker"] for s in sessions}) == 2
    acc = sorted(srv.accepted)
    # plan: (ceil(40 / 10) - 1) x 1 s = 3 s; never faster, and at most one window late (uneven split of
    # the arrivals over the two workers' shares, handshakes on a loaded machine)
    assert 3.0 <= acc[-1] - acc[0] <= 4.0, acc[-1] - acc[0]
    assert "ramp 3.0 s (quota 3.0 s" in m_out
    rows = tl.stats_rows(tmp_path / "dist_stats.csv")
    wait = rows[("QUOTA", "dist:wait for connection budget")]
    assert int(wait["Request Count"]) == 40 and int(wait["Failure Count"]) == 0
    meta = json.loads((out / "run.json").read_text())
    (quota,) = meta["quota"].values()  # the master split 10 per window into one share per worker
    assert sorted(quota["shares"].values()) == [5, 5] and quota["connections_per_window"] == 10


def test_token_quota_throttles_turns_without_failing_the_agent(tmp_path):
    """Three callers speaking more audio than a 60-tokens-per-1-s quota allows: the server throttles
    turns (error rate_limit_exceeded + close, like Azure's TPM limit). They are classified
    throttled_tokens, kept out of completeness (the 0.99 threshold passes, exit 0), callers back off
    for the Retry-After the message names and the run goes on with complete turns afterwards."""
    with qs.QuotaServer(connections=None, window_s=1.0, tokens=40, retry_after_s=0.5) as srv:
        sc = manual_scenario(tmp_path / "tpm.yaml", srv.url, users=3, duration="7s",
                             fixtures=("car_call_mom", "car_eta"), more="thresholds: ['completeness >= 0.99']")
        run = run_cli("run", str(sc), "--out", str(tmp_path / "out"))
        assert run.returncode == 0, run.stderr[-3000:]
    turns = list(read_records(tmp_path / "out" / "turns.jsonl"))
    throttled = [t for t in turns if t["throttle"]]
    refused = [t for t in throttled if t["error"].startswith("rate_limit_exceeded")]
    assert srv.tpm_errors >= 1 and len(refused) == srv.tpm_errors, (srv.tpm_errors, [t["error"] for t in turns])
    # The rest were cut by the close that follows the error: the throttle's doing too, never a failure.
    assert all(t["reason"] != "complete" for t in throttled) and not [t for t in turns if not t["complete"]
                                                                     and not t["throttle"]]
    assert {t["throttle"] for t in throttled} == {"throttled_tokens"} and not any(t["complete"] for t in throttled)
    first = min(t["t_speech_end"] for t in throttled)
    assert any(t["complete"] and t["t_speech_end"] > first for t in turns)  # the run went on
    sessions = list(read_records(tmp_path / "out" / "sessions.jsonl"))
    assert any(s["throttled"] == "throttled_tokens" and s["retry_after_s"] == 0.5 for s in sessions)
    import csv

    with open(tmp_path / "out" / "summary.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert int(row["throttled_tokens"]) == len(throttled) and float(row["completeness"]) == 1.0
    assert int(row["failures"]) == 0 and int(row["count"]) == len(turns)
    assert "Throttled by the service" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")


def _sim_run(tmp_path: Path, distributed: bool) -> tuple[list[dict], dict, str]:
    """200 callers arriving within ~2 s against the simulator limited to 30 new connections per 1.5 s
    window (S0's 30 per minute, on a short clock): returns sessions, the simulator's final stats, output."""
    from harness.simulator import SimulatorProcess

    out = tmp_path / "out"
    with SimulatorProcess(profile="ideal", overrides={"quotas": {"preset": "azure_s0", "window_s": 1.5}},
                          truth_log=str(tmp_path / "truth.jsonl")) as sim:
        sc = arrivals_scenario(tmp_path / "sim200.yaml", sim.url, callers=200, per_window=30, window_s=1.5)
        if distributed:
            text = run_distributed(sc, out)
        else:
            run = run_cli("run", str(sc), "--out", str(out), timeout=150)
            assert run.returncode == 0, run.stderr[-3000:]
            text = run.stderr
    assert sim.final_stats is not None
    return list(read_records(out / "sessions.jsonl")), sim.final_stats, text


@pytest.mark.parametrize("mode", ["local", "distributed"])
def test_200_arrivals_against_the_simulator_quota_take_the_planned_ramp(tmp_path, mode):
    sessions, stats, text = _sim_run(tmp_path, mode == "distributed")
    assert len(sessions) == 200 and {s["outcome"] for s in sessions} == {"ok"}
    assert all(s["connect_attempts"] == 1 and s["throttled_attempts"] == 0 for s in sessions)
    assert stats["quotas"]["throttled"] == {}, stats["quotas"]  # the simulator never had to refuse
    opened = _connected_at(sessions)
    ramp = opened[-1] - opened[0]
    assert "ramp 9.0 s (quota 9.0 s" in text  # plan: (ceil(200 / 30) - 1) windows of 1.5 s
    # Never faster than the plan (that would break the quota). Slower by one handshake per step: each
    # step of the ramp waits for a handshake to end, the only instant the server has surely counted it.
    # On a quiet machine that is ~0.08 s per step (9.49 s measured locally, within 10 %); on this
    # shared 2-core CI machine at load average 8-11 a step took up to 0.3 s locally and 0.2-0.7 s with
    # three Locust processes (10.1 s local, 10.8-13.4 s distributed measured), so the bound is loose:
    # a timed assertion must not flake. The quota itself is checked exactly above (no 429 at all).
    assert 9.0 * 0.95 <= ramp <= 9.0 * (1.25 if mode == "local" else 1.6), ramp
    if mode == "distributed":
        assert len({s["worker"] for s in sessions}) == 2
    print(f"{mode}: ramp {ramp:.2f} s (plan 9.0 s); simulator refusals: none")


def test_sessions_at_the_maximum_length_reconnect_and_finish_the_conversation(tmp_path):
    """The simulator ends every session after 4 s (its max_session_minutes on a short clock: error
    session_expired, close 1001). A caller with a four-turn conversation reconnects and finishes it; the
    reconnects and their gaps are in sessions.jsonl and run.json, and the turn the expiry cut short is
    classified session_expired, not a failure of the agent."""
    from harness.simulator import SimulatorProcess

    with SimulatorProcess(profile="ideal", overrides={"quotas": {"preset": "none", "max_session_minutes": 4 / 60}}) as sim:
        sc = manual_scenario(tmp_path / "soak.yaml", sim.url, users=2, duration="6s",
                             fixtures=("car_call_mom", "car_eta", "car_call_mom", "car_eta"),
                             more="  sessions_per_user: 1\nthresholds: ['completeness >= 0.99']")
        run = run_cli("run", str(sc), "--out", str(tmp_path / "out"))
        assert run.returncode == 0, run.stderr[-3000:]
    sessions = list(read_records(tmp_path / "out" / "sessions.jsonl"))
    turns = list(read_records(tmp_path / "out" / "turns.jsonl"))
    assert len(sessions) == 2 and all(s["reconnects"] >= 1 for s in sessions), sessions
    assert all(len(s["reconnect_gap_ms"]) == s["reconnects"] and all(0 < g < 2000 for g in s["reconnect_gap_ms"])
               for s in sessions)
    for s in sessions:  # every turn of the conversation was spoken, on one connection or the next
        mine = sorted(t["turn_index"] for t in turns if t["session_id"] == s["session_id"])
        assert mine == [0, 1, 2, 3], mine
        assert s["turns_recorded"] == 4
    late = [t for t in turns if t["turn_index"] >= 2]
    assert any(t["complete"] for t in late)  # the conversation went on after a reconnect
    assert {t["throttle"] for t in turns if not t["complete"]} <= {"session_expired"}
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert meta["reconnects"]["count"] == sum(s["reconnects"] for s in sessions)
    assert meta["reconnects"]["gap_ms_max"] == pytest.approx(max(g for s in sessions for g in s["reconnect_gap_ms"]), abs=0.1)


def test_429_shapes_are_classified_from_status_body_and_headers():
    """The simulator's three 429 shapes (docs/simulator.md, "Quotas") and Azure-style wording."""
    import orjson

    from harness.limits import AZURE_S0
    from harness.quota import classify_throttle, is_session_expiry, retry_after_from_text
    from harness.simulator import quotas as sq

    body, headers = sq.connections_429(AZURE_S0, 12.0)
    plain = {k: v for k, v in headers if k != sq.KIND_HEADER}  # real services send no kind hint
    assert classify_throttle(429, plain, orjson.dumps(body)) == "throttled_connections"
    body, headers = sq.capacity_429(2.0)
    assert classify_throttle(429, {k: v for k, v in headers if k != sq.KIND_HEADER}, orjson.dumps(body)) == "capacity"
    err = sq.tokens_error(AZURE_S0, 130_000, 7.0)["error"]
    text = f"{err['code']}: {err['message']}"
    assert classify_throttle(None, None, "", text) == "throttled_tokens" and retry_after_from_text(text) == 7.0
    assert classify_throttle(429, {"x-ratelimit-remaining-tokens": "0"}, b"") == "throttled_tokens"
    assert classify_throttle(429, {}, b"") == "throttled_connections"  # a bare handshake 429
    assert classify_throttle(None, None, "", "server_error: the model failed") == ""  # not a throttle
    assert classify_throttle(401, {}, b'{"error": {"message": "invalid key"}}') == ""
    expired = sq.expired_error(3600.0)["error"]
    assert is_session_expiry(f"{expired['code']}: {expired['message']}")


def test_limits_defaults_and_bad_values(tmp_path):
    from harness.client.endpoints import target_limits
    from harness.limits import AZURE_S0, UNLIMITED
    from harness.scenario import ScenarioError, parse_scenario

    def targets(raw):
        return parse_scenario({"target": raw, "conversation": ["car_call_mom"]}, "t.yaml").targets[0]

    azure = targets({"endpoint": "https://x.services.ai.azure.com", "model": "gpt-realtime"})
    assert target_limits(azure) == AZURE_S0
    raised = targets({"endpoint": "https://x.cognitiveservices.azure.com", "model": "gpt-realtime",
                      "limits": {"connections_per_minute": 90, "tokens_per_minute": None}})
    assert target_limits(raised) == AZURE_S0.__class__(90, None, 60)  # over the S0 defaults; null = no limit
    other = targets({"endpoint": "https://gateway.example.com", "model": "gpt-realtime"})
    assert target_limits(other) == UNLIMITED
    assert target_limits(targets({"embedded": True, "profile": "realistic"})).connections_per_minute == 30
    assert target_limits(targets({"embedded": True, "profile": "ideal"})) == UNLIMITED
    with pytest.raises(ScenarioError) as e:
        targets({"endpoint": "https://x.services.ai.azure.com", "model": "m",
                 "limits": {"connections_per_minute": 0, "tokens_per_min": 5}})
    msg = str(e.value)
    assert "t.yaml: target.limits.connections_per_minute: must be ≥ 1" in msg
    assert "t.yaml: target.limits.tokens_per_min: unknown field (did you mean 'tokens_per_minute'?)" in msg


def test_arrivals_are_a_seeded_poisson_schedule():
    from harness.arrivals import ArrivalSpec, parse_rate

    assert parse_rate("20/min") == pytest.approx(1 / 3) and parse_rate("2/s") == 2 and parse_rate(60) == 1.0
    with pytest.raises(ValueError):
        parse_rate("fast")
    a = ArrivalSpec(rate_per_s=2.0, duration_s=600, max_concurrent=50, seed=1).times()
    assert a == ArrivalSpec(rate_per_s=2.0, duration_s=600, max_concurrent=50, seed=1).times()  # reproducible
    assert a != ArrivalSpec(rate_per_s=2.0, duration_s=600, max_concurrent=50, seed=2).times()
    gaps = [b - c for b, c in zip(a[1:], a)]
    mean = sum(gaps) / len(gaps)
    assert 1100 < len(a) < 1300 and 0.45 < mean < 0.55  # rate 2/s for 600 s
    assert 0.85 < (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 / mean < 1.15  # exponential: sd = mean
    assert len(ArrivalSpec(rate_per_s=2.0, duration_s=600, max_concurrent=50, callers=40).times()) == 40


# -- the budget and the shares, on a fake clock (no sockets) ---------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_connection_budget_never_grants_more_than_n_per_window_counting_from_handshake_end():
    """Whatever the handshake takes, connections N apart start at least a window after the earlier one
    ended (the latest instant the server can have counted it)."""
    import random

    from harness.quota import ConnectionBudget

    clock, rng = FakeClock(), random.Random(3)
    budget = ConnectionBudget(per_window=5, window_s=2.0, clock=clock)
    granted, ended = [], []
    in_flight: list[tuple[float, object]] = []
    while len(granted) < 60:
        slot = budget.try_take()
        if slot is not None:
            granted.append(clock.t)
            in_flight.append((clock.t + rng.uniform(0.0, 0.8), slot))
            continue
        clock.t += 0.01
        for end, s in [x for x in in_flight if x[0] <= clock.t]:
            s.done()
            ended.append(clock.t)
            in_flight.remove((end, s))
    assert qs.max_in_window(granted, 2.0) <= 5
    assert granted[5] > granted[0] + 2.0  # the sixth waited for a handshake to end, then a window
    for i in range(5, len(granted)):  # slot i waited for the (i-5)-th handshake to end, plus a window
        assert granted[i] >= sorted(ended)[i - 5] + 2.0 - 1e-9


class FakeNode:
    def __init__(self, state: str = "running") -> None:
        self.state = state


class FakeMaster:
    def __init__(self) -> None:
        self.clients: dict[str, FakeNode] = {}
        self.sent: list[tuple[str, dict]] = []

    def send_message(self, kind: str, data: dict, client_id: str | None = None) -> None:
        self.sent.append((client_id, data))

    def take(self) -> dict[str, int]:
        out = {w: d["n"] for w, d in self.sent}
        self.sent.clear()
        return out


def test_master_shares_shrink_at_once_and_grow_a_window_later_as_workers_come_and_go():
    """Shares in force never add up to more than the quota in any window: a newcomer's share and a
    grown share start one window after the shrinking ones were sent."""
    from harness.limits import Limits
    from harness.locust_coord import Coordinator

    master = FakeMaster()
    master.clients = {"w1": FakeNode(), "w2": FakeNode()}
    c = Coordinator({"r": Limits(connections_per_minute=30, window_s=60.0)}, runner=master)
    c.close()  # drive rebalance() by hand
    c.rebalance(now=0.0)
    assert master.take() == {"w1": 15, "w2": 15}  # test start: nothing to overlap with
    master.clients["w3"] = FakeNode()  # a worker joins
    c.rebalance(now=10.0)
    assert master.take() == {"w1": 10, "w2": 10}  # the others shrink at once
    c.rebalance(now=69.0)
    assert master.take() == {}
    c.rebalance(now=70.0)
    assert master.take() == {"w3": 10}  # the newcomer starts a window later
    master.clients["w1"].state = "missing"  # a worker goes missing
    c.rebalance(now=80.0)
    assert master.take() == {}  # its share lapses; nobody grows yet
    c.rebalance(now=140.0)
    assert master.take() == {"w2": 15, "w3": 15}
    assert c.summary()["r"]["shares"] == {"w1": 10, "w2": 15, "w3": 15}  # last share each worker was sent


def test_locust_refuses_to_start_above_max_cost(tmp_path):
    import test_locust as tl

    run = subprocess.run(tl.LOCUST + ["--headless", "--scenario", "scenarios/breakpoint.yaml", "--voiceload-out",
                                      str(tmp_path / "out"), "--voiceload-max-cost", "0.01", "--only-summary"],
                         cwd=ROOT, env=tl.env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr[-2000:]
    assert re.search(r"refusing to start: the estimated cost \$[\d,.]+ is above --voiceload-max-cost \$0\.01",
                     run.stderr)
