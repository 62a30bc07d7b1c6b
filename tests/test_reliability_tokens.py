"""Entra tokens that expire every few seconds, through a simulator that refuses expired tokens.

A fake credential hands out JWT-shaped tokens (``aud`` https://ai.azure.com, ``exp`` 4 s ahead);
the simulator (``accept_any_unexpired_jwt``) answers 401 to an expired one. Three callers run
back-to-back sessions for 15 s through the real URL builder and CredentialProvider (the refresh
margin and minimum validity scaled down from minutes to seconds). No session may be refused, every
connect must carry an unexpired token, and the credential must have been asked again and again —
but not once per connect.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken

from harness import auth
from harness.client.runner import LoadRunner
from harness.client.session import CallerSession, Endpoint, SessionOptions
from harness.protocol import endpoint as ep
from harness.scenario import load_scenario
from harness.shapes import make_plan
from harness.simulator import SimulatorProcess

ROOT = Path(__file__).resolve().parent.parent
LIFETIME_S = 4.0
MARGIN_S = 2.0
RUN_S = 15.0


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def jwt(exp: float, n: int) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'aud': 'https://ai.azure.com', 'exp': int(exp), 'n': n})}.sig"


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class ShortLivedCredential:
    """Like azure-identity's credentials: get_token(*scopes) -> AccessToken, here valid LIFETIME_S."""

    def __init__(self) -> None:
        self.calls = 0
        self.scopes: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        with self._lock:
            self.calls += 1
            n = self.calls
        self.scopes.add(scopes)
        exp = time.time() + LIFETIME_S
        return AccessToken(jwt(exp, n), int(exp))


@pytest.fixture()
def short_tokens(monkeypatch):
    auth.reset_shared_credentials()
    monkeypatch.setattr(auth, "MIN_VALIDITY_S", 1.0)  # 30 s in production, scaled like the lifetime
    yield
    auth.reset_shared_credentials()


def test_tokens_are_refreshed_and_never_used_expired(short_tokens, monkeypatch):
    monkeypatch.chdir(ROOT)
    sc = load_scenario(ROOT / "scenarios" / "smoke.yaml")
    sc = dataclasses.replace(sc, conversation=[dataclasses.replace(sc.conversation[0], fixture="car_call_mom",
                                                                   pause_ms=100)],
                             audio=dataclasses.replace(sc.audio, trailing_silence_ms=0),
                             load=dataclasses.replace(sc.load, users=3, spawn_rate=3, think_time_s=(0.0, 0.0),
                                                      turn_timeout_s=4.0, stop_timeout_s=6.0))
    cred = ShortLivedCredential()
    used: list[tuple[float, dict]] = []
    sessions, turns = [], []
    overrides = {"auth": {"required": True, "accept_any_unexpired_jwt": True}}
    with SimulatorProcess(profile="ideal", overrides=overrides) as sim:
        target = ep.Target(name="entra", endpoint=f"ws://127.0.0.1:{sim.port}", model="gpt-realtime",
                           auth=ep.AuthConfig(kind="entra"))
        provider = auth.CredentialProvider(target.auth, credential=cred, refresh_margin_s=MARGIN_S)

        def headers() -> dict[str, str]:
            h = provider.headers()
            used.append((time.time(), claims(h["Authorization"].removeprefix("Bearer "))))
            return h

        endpoint = Endpoint(name="entra", url=lambda: ep.build_url(target, secrets=provider.query_secrets()),
                            headers=headers, display=ep.display_url(ep.build_url(target)), open_timeout_s=5.0)
        runner = LoadRunner(sc, [endpoint], make_plan(sc.load, duration_s=RUN_S, drain_s=0.0),
                            on_turn=turns.append, on_session=sessions.append, progress=None)
        runner.run()
        # Control: the simulator really refuses an expired token (else "no 401" would prove nothing).
        expired = Endpoint(name="expired", url=endpoint.url, display="expired", open_timeout_s=5.0,
                           headers=lambda: {"Authorization": f"Bearer {jwt(time.time() - 1, 0)}"})
        control = CallerSession(sc, expired, SessionOptions(session_id="control")).run()
    stats = sim.final_stats or {}

    assert control.outcome == "rejected" and control.http_status == 401, control
    assert len(sessions) >= 9, len(sessions)  # ~15 s of back-to-back sessions by three callers
    assert all(s.outcome == "ok" for s in sessions), [(s.outcome, s.error) for s in sessions if s.outcome != "ok"]
    assert all(t.complete for t in turns)
    assert stats.get("rejected") == {"401": 1}, stats.get("rejected")  # the control, and nothing else
    # Every connect carried a token with at least MIN_VALIDITY_S left (whole-second exp, hence the 1 s slack).
    assert len(used) == len(sessions)
    assert all(c["exp"] - t >= auth.MIN_VALIDITY_S - 1.0 for t, c in used), [(round(c["exp"] - t, 2)) for t, c in used]
    # Refreshed again and again (a 4 s token cannot last a 15 s run), single-flight: not once per connect.
    distinct = {c["n"] for _, c in used}
    assert cred.calls >= RUN_S / LIFETIME_S, cred.calls
    assert len(distinct) >= 3 and cred.calls <= len(sessions), (cred.calls, len(sessions))
    assert cred.scopes == {(ep.DEFAULT_SCOPE,)}
