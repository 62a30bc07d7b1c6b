"""Handshake checks (path, api-version, model/agent, auth) and the connection-level faults."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from harness.simulator import start_simulator
from harness.simulator.handshake import check, jwt_ok
from harness.simulator.profiles import AuthConfig
from harness.simulator.truth import read_truth
from simclient import SimClient, handshake_status, sim_url

AUTH = {"auth": {"required": True, "api_keys": ["k-good"], "bearer_tokens": ["t-good"], "agent_tokens": ["a-good"]}}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def jwt(claims: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")  # noqa: E731
    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(claims)}.sig"


@pytest.mark.parametrize("path, status, needle", [
    ("/realtime?api-version=2026-07-15&model=m", 404, "Resource not found"),
    ("/voice-live/realtime?model=m", 400, "api-version query parameter"),
    ("/voice-live/realtime?api-version=2024-01-01&model=m", 400, "The api-version '2024-01-01' is not supported"),
    ("/voice-live/realtime?api-version=2026-07-15", 400, "Either 'model' or an agent"),
    ("/voice-live/realtime?api-version=2026-07-15&agent-name=a", 400, "agent-project-name"),
    ("/voice-live/realtime?api-version=2026-07-15&agent-id=a&agent-project-name=p", 400, "agent-access-token"),
])
def test_request_rejections(path, status, needle):
    h = check(path, {}, AuthConfig())
    assert h.status == status and needle in h.body["error"]["message"]
    assert set(h.body["error"]) == {"code", "message"}


def test_model_and_agent_modes_are_accepted():
    h = check("/voice-live/realtime?api-version=2025-10-01&model=gpt-4.1", {}, AuthConfig())
    assert h.ok and h.model == "gpt-4.1" and h.agent is None and h.api_version == "2025-10-01"
    h = check("/voice-live/realtime?api-version=2026-07-15&agent-name=a&agent-project-name=p&agent-version=3"
              "&conversation-id=c1", {}, AuthConfig())
    assert h.ok and h.agent["name"] == "a" and h.agent["thread_id"] == "c1" and h.model is None
    h = check("/voice-live/realtime?api-version=2025-05-01-preview&agent-id=x&agent-project-name=p"
              "&agent-access-token=s3cr3t", {}, AuthConfig())
    assert h.ok and h.agent["agent_id"] == "x" and h.auth_kind == "agent-token"
    assert "s3cr3t" not in h.describe() and "agent-access-token': '***'" in h.describe()


def test_auth_rules():
    auth = AuthConfig(required=True, api_keys=("k",), bearer_tokens=("t",), accept_any_unexpired_jwt=True)
    base = "/voice-live/realtime?api-version=2026-07-15&model=m"
    assert check(base, {}, auth).status == 401
    assert check(base, {"api-key": "k"}, auth).ok
    assert check(base + "&api-key=k", {}, auth).ok
    assert check(base, {"api-key": "nope"}, auth).status == 401
    assert check(base, {"Authorization": "Bearer t"}, auth).ok
    assert check(base + "&authorization=Bearer%20t", {}, auth).ok
    now = time.time()
    good = jwt({"aud": "https://ai.azure.com", "exp": now + 600})
    assert check(base, {"Authorization": f"Bearer {good}"}, auth).ok
    assert not jwt_ok(jwt({"aud": "https://ai.azure.com", "exp": now - 1}), auth, now)
    assert not jwt_ok(jwt({"aud": "https://graph.microsoft.com", "exp": now + 600}), auth, now)
    assert jwt_ok(jwt({"scp": "https://cognitiveservices.azure.com/.default", "exp": now + 60}), auth, now)
    bad = check(base, {"Authorization": "Bearer wrong"}, auth)
    assert bad.status == 401 and ("WWW-Authenticate", "Bearer") in bad.headers


def test_handshake_over_sockets_with_required_auth():
    async def main(url):
        out = {}
        out["none"] = await handshake_status(sim_url(url))
        out["bad_key"] = await handshake_status(sim_url(url), {"api-key": "k-bad"})
        out["key"] = await handshake_status(sim_url(url), {"api-key": "k-good"})
        out["bearer"] = await handshake_status(sim_url(url), {"Authorization": "Bearer t-good"})
        out["version"] = await handshake_status(sim_url(url, api_version="1999-01-01"), {"api-key": "k-good"})
        out["path"] = await handshake_status(url + "/nope?api-version=2026-07-15&model=m")
        c = await SimClient.open(url, headers={"api-key": "k-good"}, subprotocols=["realtime"])
        out["subprotocol"] = c.ws.subprotocol
        created = await c.wait_for("session.created")
        await c.close()
        return out, created

    with start_simulator("ideal", overrides=AUTH) as sim:
        out, created = run(main(sim.url))
        stats = sim.stats()
    status, headers, body = out["none"]
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert headers["content-type"] == "application/json" and json.loads(body)["error"]["code"] == "401"
    assert out["bad_key"][0] == 401 and out["key"][0] == 101 and out["bearer"][0] == 101
    assert out["version"][0] == 400 and b"Supported versions: 2025-05-01-preview" in out["version"][2]
    assert out["path"][0] == 404
    assert out["subprotocol"] == "realtime" and created["session"]["model"] == "gpt-realtime"
    assert stats["rejected"] == {401: 2, 400: 1, 404: 1}


def test_auth_not_required_accepts_anything():
    async def main(url):
        return [(await handshake_status(sim_url(url), h))[0] for h in ({}, {"api-key": "whatever"})]

    with start_simulator("ideal") as sim:
        assert run(main(sim.url)) == [101, 101]


@pytest.mark.parametrize("fault, status", [("handshake_429", 429), ("handshake_503", 503)])
def test_throttling_faults_carry_retry_after(fault, status):
    async def main(url):
        return await handshake_status(sim_url(url))

    with start_simulator("ideal", overrides={"faults": {fault: 1.0, "retry_after_s": 7}}) as sim:
        code, headers, body = run(main(sim.url))
    assert code == status and headers["retry-after"] == "7" and json.loads(body)["error"]["message"]


def test_slow_handshake_and_max_sessions():
    async def main(url):
        t0 = time.monotonic()
        a = await SimClient.open(url)
        slow = time.monotonic() - t0
        second = await handshake_status(sim_url(url))
        await a.close()
        await asyncio.sleep(0.2)
        third = await handshake_status(sim_url(url))
        return slow, second, third

    over = {"faults": {"slow_handshake": 1.0, "slow_handshake_ms": 400, "max_sessions": 1, "retry_after_s": 2}}
    with start_simulator("ideal", overrides=over) as sim:
        slow, second, third = run(main(sim.url))
    assert slow >= 0.39
    assert second[0] == 429 and second[1]["retry-after"] == "2"
    assert third[0] == 101


@pytest.mark.parametrize("mode, code", [("abort", 1006), ("close_1011", 1011)])
def test_disconnect_mid_response(mode, code):
    async def main(url):
        c = await SimClient.open(url)
        await c.wait_for("session.created")
        await c.send({"type": "response.create"})
        await c.wait_for("response.audio.delta")
        closed = await c.wait_closed()
        return c, closed

    over = {"faults": {"disconnect_mid_response": 1.0, "disconnect_mode": mode}}
    with start_simulator("ideal", overrides=over) as sim:
        c, closed = run(main(sim.url))
    assert "response.done" not in c.types()
    assert (closed.rcvd.code if closed.rcvd else 1006) == code


def test_stall_error_and_malformed_faults():
    async def one(url):
        c = await SimClient.open(url)
        await c.wait_for("session.created")
        await c.send({"type": "response.create"})
        await c.wait_for("response.audio.delta")
        return c

    async def stall(url):
        c = await one(url)
        await asyncio.sleep(1.5)
        n = len(c.events)
        await asyncio.sleep(1.0)
        await c.close()
        return c, n

    async def error(url):
        c = await one(url)
        err = await c.wait_for("error")
        done = await c.wait_for("response.done")
        await c.close()
        return err, done

    async def malformed(url):
        c = await one(url)
        done = await c.wait_for("response.done", 15)
        await c.close()
        return c, done

    with start_simulator("ideal", overrides={"faults": {"stall_response": 1.0}}) as sim:
        c, n = run(stall(sim.url))
    assert "response.done" not in c.types() and len(c.events) == n  # nothing more, ever
    with start_simulator("ideal", overrides={"faults": {"error_mid_turn": 1.0}}) as sim:
        err, done = run(error(sim.url))
    assert err["error"]["type"] == "server_error" and done["response"]["status"] == "failed"
    with start_simulator("ideal", overrides={"faults": {"malformed_frame": 1.0}, **{"audio_pace": 8}}) as sim:
        c, done = run(malformed(sim.url))
    assert done["response"]["status"] == "completed"
    assert any(isinstance(r, bytes) for r in c.raw) and any(isinstance(r, str) for r in c.raw)


@pytest.mark.parametrize("over, minutes, limit_s", [
    ({"faults": {"session_time_limit_s": 1.0}}, "0.0166667", 1.0),  # the fault knob, in seconds
    ({"quotas": {"max_session_minutes": 0.02}}, "0.02", 1.2),  # the quota (S0: 60)
])
def test_session_time_limit_closes_1001(tmp_path, over, minutes, limit_s):
    async def main(url):
        c = await SimClient.open(url)
        created = await c.wait_for("session.created")
        err = await c.wait_for("error", 5)
        closed = await c.wait_closed()
        return created, err, closed

    truth = tmp_path / "truth.jsonl"
    with start_simulator("ideal", truth_log=str(truth), overrides=over) as sim:
        created, err, closed = run(main(sim.url))
    assert err["error"]["code"] == "session_expired"
    assert err["error"]["message"] == f"Your session hit the maximum duration of {minutes} minutes."
    assert closed.rcvd.code == 1001
    assert created["session"]["expires_at"] <= time.time() + 2
    (rec,) = read_truth(truth, kind="throttle")  # the decision is in the ground truth
    assert rec["throttle"] == "session_expired" and rec["limit_s"] == pytest.approx(limit_s)