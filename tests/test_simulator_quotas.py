"""Per-resource quotas of the simulator over real loopback sockets, with windows of seconds.

The harness tells three kinds of refusal apart (docs/simulator.md "Quotas"): the connection quota
(HTTP 429, rate-limit headers, code "429"), the token quota (an ``error`` event with code
rate_limit_exceeded, then close 1013 or a failed response) and service capacity (HTTP 429 with code
ServiceBusy and no rate-limit headers). These tests pin each shape and the rolling-window arithmetic.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from harness.limits import AZURE_S0, UNLIMITED, Limits
from harness.simulator import start_simulator
from harness.simulator.profiles import ProfileError, load_profile
from harness.simulator.quotas import ResourceQuota
from harness.simulator.truth import read_truth
from simclient import SimClient, handshake_status, sim_url


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_profiles_carry_quotas_and_overrides_keep_the_preset():
    assert load_profile("realistic").quotas == AZURE_S0 and load_profile("degraded").quotas == AZURE_S0
    assert load_profile("ideal").quotas == UNLIMITED and load_profile("chaos").quotas.unlimited
    p = load_profile("realistic", {"quotas.window_s": 2, "quotas.connections_per_minute": 5})
    assert p.quotas == Limits(5, 120_000, 60, window_s=2.0) and p.session_limit_s == 3600
    assert load_profile("realistic", {"quotas": "none"}).quotas == UNLIMITED
    assert load_profile("ideal", {"quotas": {"preset": "azure_s0", "tokens_per_minute": None}}).quotas == \
        Limits(30, None, 60)
    for bad, field in (({"quotas": "s9"}, "quotas.preset"), ({"quotas": {"tpm": 1}}, "quotas.tpm"),
                       ({"quotas": {"window_s": 0}}, "quotas.window_s"),
                       ({"quotas": {"on_tokens_exceeded": "explode"}}, "quotas.on_tokens_exceeded")):
        with pytest.raises(ProfileError, match=field.replace(".", r"\.")):
            load_profile("ideal", bad)


def test_rolling_windows_count_exactly():
    q = ResourceQuota(Limits(connections_per_minute=2, tokens_per_minute=100, window_s=10))
    s = 1_000_000_000
    assert q.connection_retry_after(0) is None
    q.admit_connection(0)
    q.admit_connection(4 * s)
    assert q.connection_retry_after(5 * s) == pytest.approx(5.0)  # the first leaves at 10 s
    assert q.connection_retry_after(10 * s + 1) is None
    q.spend(60, 0)
    q.spend(50, 3 * s)
    assert q.tokens_used(3 * s) == 110 and q.tokens_retry_after(3 * s) == pytest.approx(7 + 10 / 60, abs=0.01)
    assert q.tokens_retry_after(11 * s) is None and q.tokens_used(11 * s) == 50


def test_connection_quota_answers_429_with_retry_after_and_recovers(tmp_path):
    truth = tmp_path / "truth.jsonl"

    async def main(url):
        clients = [await SimClient.open(url) for _ in range(3)]
        refused = [await handshake_status(sim_url(url)) for _ in range(2)]  # refusals use no quota
        await asyncio.sleep(int(refused[-1][1]["retry-after-ms"]) / 1000 + 0.05)
        later = await handshake_status(sim_url(url))
        for c in clients:
            await c.close()
        return refused, later

    with start_simulator("ideal", truth_log=str(truth),
                         overrides={"quotas": {"connections_per_minute": 3, "window_s": 2}}) as sim:
        refused, later = run(main(sim.url))
        stats = sim.stats()
    for status, headers, body in refused:
        assert status == 429 and headers["x-ms-throttle-kind"] == "throttled_connections"
        wait_ms = int(headers["retry-after-ms"])  # until the first of the three leaves the 2 s window
        assert 0 < wait_ms <= 2000 and headers["retry-after"] == str(max(1, -(-wait_ms // 1000)))
        assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-limit-requests"] == "3"
        err = json.loads(body)["error"]
        assert err["code"] == "429" and "new-connection rate limit" in err["message"]
        assert "3 new connections per 2 seconds" in err["message"]
    assert later[0] == 101  # once the oldest connection left the window
    assert stats["quotas"]["throttled"] == {"throttled_connections": 2} and stats["rejected"] == {429: 2}
    lines = read_truth(truth, kind="throttle")
    assert [r["throttle"] for r in lines] == ["throttled_connections"] * 2
    assert lines[0]["limit"] == 3 and lines[0]["in_window"] == 3 and 0 < lines[0]["retry_after_s"] <= 2


def test_capacity_429_is_distinguishable_from_the_quota(tmp_path):
    async def main(url):
        return await handshake_status(sim_url(url))

    with start_simulator("ideal", truth_log=str(tmp_path / "t.jsonl"),
                         overrides={"faults": {"handshake_429": 1.0, "retry_after_s": 0.5}}) as sim:
        status, headers, body = run(main(sim.url))
    assert status == 429 and headers["retry-after"] == "0.5" and headers["x-ms-throttle-kind"] == "capacity"
    assert not any(h.startswith("x-ratelimit") for h in headers)
    assert json.loads(body)["error"]["code"] == "ServiceBusy"
    assert [r["throttle"] for r in read_truth(tmp_path / "t.jsonl", kind="throttle")] == ["capacity"]


async def _two_responses(url: str, **open_kw):
    """One full response (spends its output tokens), then a second response.create."""
    c = await SimClient.open(url, **open_kw)
    await c.wait_for("session.created")
    await c.send({"type": "response.create"})
    first = await c.wait_for("response.done", 15)
    await c.send({"type": "response.create", "event_id": "evt_2"})
    return c, first


def test_token_quota_closes_the_session_with_rate_limit_error(tmp_path):
    truth = tmp_path / "truth.jsonl"

    async def main(url):
        c, first = await _two_responses(url)
        err = await c.wait_for("error", 10)
        closed = await c.wait_closed()
        return c, first, err, closed

    over = {"audio_pace": 8, "quotas": {"tokens_per_minute": 20, "window_s": 30}}
    with start_simulator("ideal", truth_log=str(truth), overrides=over) as sim:
        c, first, err, closed = run(main(sim.url))
        stats = sim.stats()
    assert first["response"]["status"] == "completed" and first["response"]["usage"]["total_tokens"] > 20
    e = err["error"]
    assert e["code"] == "rate_limit_exceeded" and e["type"] == "tokens"
    assert "limit 20 tokens per 30 seconds" in e["message"] and "Please retry after" in e["message"]
    assert closed.rcvd.code == 1013 and c.types()[-1] == "error"  # nothing of a second response
    (rec,) = read_truth(truth, kind="throttle")
    assert rec["throttle"] == "throttled_tokens" and rec["action"] == "close" and rec["used"] >= 20
    assert stats["quotas"]["tokens_total"] == first["response"]["usage"]["total_tokens"]


def test_token_quota_can_fail_the_response_and_keep_the_session(tmp_path):
    truth = tmp_path / "truth.jsonl"

    async def main(url):
        c, first = await _two_responses(url)
        created = await c.wait_for("response.created")
        err = await c.wait_for("error")
        done = await c.wait_for("response.done")
        await asyncio.sleep(2.2)  # the window (2 s) rolls past the first response's tokens
        await c.send({"type": "response.create"})
        third = await c.wait_for("response.done", 15)
        await c.close()
        return c, created, err, done, third

    over = {"audio_pace": 8, "quotas": {"tokens_per_minute": 20, "window_s": 2, "on_tokens_exceeded": "fail_response"}}
    with start_simulator("ideal", truth_log=str(truth), overrides=over) as sim:
        c, created, err, done, third = run(main(sim.url))
    rid = created["response"]["id"]
    assert done["response"]["id"] == rid and done["response"]["status"] == "failed"
    assert done["response"]["status_details"]["error"]["code"] == "rate_limit_exceeded"
    assert err["error"]["code"] == "rate_limit_exceeded" and third["response"]["status"] == "completed"
    assert not [e for e in c.of_type("response.audio.delta") if e["response_id"] == rid]
    responses = {r["response_id"]: r for r in read_truth(truth)}
    assert responses[rid]["status"] == "failed" and responses[rid]["fault"] == "throttled_tokens"
    (rec,) = read_truth(truth, kind="throttle")
    assert rec["response_id"] == rid and rec["action"] == "fail_response"


def test_rate_limits_updated_reports_the_quota():
    async def main(url):
        c = await SimClient.open(url)
        await c.wait_for("session.created")
        await c.send({"type": "response.create"})
        rl = await c.wait_for("rate_limits.updated")
        await c.close()
        return rl

    over = {"rate_limits_event": True, "quotas": {"connections_per_minute": 4, "tokens_per_minute": 1000}}
    with start_simulator("ideal", overrides=over) as sim:
        rl = run(main(sim.url))
    by = {r["name"]: r for r in rl["rate_limits"]}
    assert by["requests"]["limit"] == 4 and by["requests"]["remaining"] == 3
    assert by["tokens"]["limit"] == 1000 and by["tokens"]["remaining"] == 1000


def test_a_sub_second_session_limit_is_announced_and_enforced_at_one_instant():
    """Over a real socket, a 0.6 s cap: ``expires_at`` (whole seconds) is not before the cap, and the
    session_expired error does not come before ``expires_at`` (both one-sided: a busy machine only
    delays the error). The old simulator announced floor(now) + 0, a second already begun."""
    async def main(url):
        before = time.time()
        c = await SimClient.open(url)
        created = await c.wait_for("session.created")
        err = await c.wait_for("error", 10)
        arrived = time.time()
        await c.close()
        return before, created["session"]["expires_at"], err, arrived

    with start_simulator("ideal", overrides={"quotas": {"preset": "none", "max_session_minutes": 0.01}}) as sim:
        before, expires_at, err, arrived = run(main(sim.url))
    assert err["error"]["code"] == "session_expired"
    assert isinstance(expires_at, int) and expires_at >= before + 0.6
    assert arrived >= expires_at - 0.02, (arrived, expires_at)  # 20 ms: clock reads on either side


def test_every_second_of_audio_received_costs_ten_tokens():
    async def main(url):
        c = await SimClient.open(url)
        await c.wait_for("session.created")
        await c.update({"turn_detection": None})  # silence only: no turn, no response, still charged
        await c.silence(2000, speed=0)
        await asyncio.sleep(0.3)
        await c.send({"type": "response.create"})
        err = await c.wait_for("error", 10)
        await c.close()
        return err

    with start_simulator("ideal", overrides={"quotas": {"tokens_per_minute": 20, "window_s": 30}}) as sim:
        err = run(main(sim.url))
        stats = sim.stats()
    assert stats["quotas"]["tokens_total"] == 20 and stats["audio_in_s"] == 2.0
    assert err["error"]["code"] == "rate_limit_exceeded" and "used 20" in err["error"]["message"]


TPM_PROFILE = """
name: tpm
first_audio_delay_ms: 150
response_created_delay_ms: 20
chunk_ms: 100
audio_pace: 4.0
reply_length_ms: 1000
vad_batch_ms: 20
quotas: {tokens_per_minute: 35, window_s: 1}
"""
TPM_SCENARIO = """
name: tpm
target: {{embedded: true, profile: {profile}}}
session:
  turn_detection: {{type: server_vad, silence_duration_ms: 400}}
conversation:
  - {{fixture: car_call_mom, pause_ms: 200}}
  - {{fixture: car_eta, pause_ms: 200}}
audio: {{trailing_silence_ms: 200}}
load: {{users: 3, spawn_rate: 1, duration: 8s, turn_timeout: 5s, stop_timeout: 5s,
        max_pacing_lag_ms: 250}}  # judges quotas, not timing, on a busy machine
thresholds: ['completeness >= 0.99']
"""


def test_harness_classifies_the_simulators_token_throttling_and_goes_on(tmp_path):
    """The contract with the harness, end to end: three callers against an embedded simulator whose
    token quota (35 per 1 s window; every caller's mic costs 10 tokens a second) runs out. Refused
    turns are classified throttled_tokens, never agent failures, the run exits 0, turns complete after
    the first throttle, and the simulator's truth log holds one line per refusal."""
    import subprocess
    import sys

    from harness.records import read_records

    profile = tmp_path / "tpm-profile.yaml"
    profile.write_text(TPM_PROFILE)
    scenario = tmp_path / "tpm.yaml"
    scenario.write_text(TPM_SCENARIO.format(profile=profile))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(scenario), "--out", str(out), "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    turns = list(read_records(out / "turns.jsonl"))
    refused = [t for t in turns if t["error"].startswith("rate_limit_exceeded")]
    throttled = [t for t in turns if t["throttle"]]
    assert refused and {t["throttle"] for t in throttled} == {"throttled_tokens"}, [(t["reason"], t["error"]) for t in turns]
    assert not [t for t in turns if not t["complete"] and not t["throttle"]]  # nothing blamed on the agent
    first = min(t["t_speech_end"] for t in refused)
    assert any(t["complete"] and t["t_speech_end"] > first for t in turns)  # the run went on
    lines = read_truth(out / "truth-embedded.jsonl", kind="throttle")
    assert len(lines) == len(refused) and {r["throttle"] for r in lines} == {"throttled_tokens"}
