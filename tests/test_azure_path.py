"""The real-Azure path (scenario target → URL → auth → handshake) against the simulator's strict auth."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken

from harness import auth, diagnosis
from harness.client.endpoints import real_endpoint
from harness.client.session import CallerSession, SessionOptions
from harness.scenario import load_scenario
from harness.simulator import SimulatorProcess

ROOT = Path(__file__).resolve().parent.parent
KEY, BEARER, AGENT_TOKEN = "vl-test-key-7f3a9c", "vl-static-bearer-19ab", "vl-agent-token-5d2e"
STRICT = {"auth": {"required": True, "api_keys": [KEY], "bearer_tokens": [BEARER], "agent_tokens": [AGENT_TOKEN],
                   "accept_any_unexpired_jwt": True}}


def fake_jwt(lifetime_s: float, aud: str = "https://ai.azure.com") -> tuple[str, int]:
    exp = int(time.time() + lifetime_s)
    part = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'aud': aud, 'exp': exp})}.c2ln", exp


class FakeCredential:
    """Stands in for DefaultAzureCredential: short-lived JWT-shaped tokens, counts calls and scopes."""

    def __init__(self, lifetime_s: float = 3600):
        self.lifetime_s, self.calls, self.scopes = lifetime_s, 0, []

    def get_token(self, *scopes, **_kw):
        self.calls += 1
        self.scopes.extend(scopes)
        token, exp = fake_jwt(self.lifetime_s)
        return AccessToken(token, exp)


@pytest.fixture(scope="module")
def strict_sim():
    with SimulatorProcess(profile="ideal", overrides=STRICT) as sim:
        yield sim


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("VL_TEST_KEY", KEY)
    monkeypatch.setenv("VL_TEST_BEARER", BEARER)
    monkeypatch.setenv("VL_TEST_AGENT_TOKEN", AGENT_TOKEN)
    auth.reset_shared_credentials()
    yield
    auth.reset_shared_credentials()


def scenario_for(tmp_path: Path, port: int, target_block: str):
    text = f"""
    name: azure_path
    target:
      name: strict
      endpoint: http://127.0.0.1:{port}
{textwrap.indent(textwrap.dedent(target_block).strip(), ' ' * 6)}
    session:
      turn_detection: {{type: server_vad, silence_duration_ms: 500}}
      input_audio_transcription: {{model: azure-speech}}
    conversation:
      - {{fixture: car_call_mom, pause_ms: 200}}
    """
    p = tmp_path / "azure.yaml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_scenario(p)


def run(sc):
    endpoint = real_endpoint(sc.targets[0].target)
    session = CallerSession(sc, endpoint, SessionOptions(session_id="az"))
    return session.run(), session.records, endpoint


CASES = {
    "api_key": "model: gpt-realtime\nauth: {kind: api_key, api_key_env: VL_TEST_KEY}",
    "bearer_token": "model: gpt-realtime\nauth: {kind: token, token_env: VL_TEST_BEARER}",
    "entra_model": "model: gpt-realtime\nauth: {kind: entra}",
    "entra_agent": "agent: {name: support-agent, project_name: contoso-proj, version: '3'}\nauth: {kind: entra}",
    "legacy_agent": "agent: {agent_id: asst_123, project_name: contoso-proj, access_token_env: VL_TEST_AGENT_TOKEN}\n"
                    "auth: {kind: entra}",
    "api_key_in_query": "model: gpt-realtime\nauth: {kind: api_key, api_key_env: VL_TEST_KEY, in_query: true}",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_auth_kind_and_agent_style_completes_a_turn(tmp_path, strict_sim, monkeypatch, case):
    cred = FakeCredential()
    monkeypatch.setattr(auth, "_new_default_credential", lambda tenant_id=None: cred)
    sc = scenario_for(tmp_path, strict_sim.port, CASES[case])
    srec, records, endpoint = run(sc)
    assert srec.outcome == "ok", srec
    assert records and records[0].complete, records
    assert KEY not in endpoint.display and AGENT_TOKEN not in endpoint.display
    if case.startswith("entra"):
        assert cred.calls >= 1 and set(cred.scopes) == {"https://ai.azure.com/.default"}


@pytest.mark.parametrize("block,status", [
    ("model: gpt-realtime\nauth: {kind: api_key, api_key_env: VL_WRONG}", 401),
    ("model: gpt-realtime\nauth: {kind: token, token_env: VL_WRONG}", 401),
])
def test_bad_credentials_are_rejected_at_the_handshake_with_a_diagnosis(tmp_path, strict_sim, monkeypatch,
                                                                        block, status):
    monkeypatch.setenv("VL_WRONG", "vl-wrong-secret-0000")
    sc = scenario_for(tmp_path, strict_sim.port, block)
    srec, records, _ = run(sc)
    assert srec.outcome == "rejected" and srec.http_status == status and records == []
    assert srec.connect_attempts == 1  # 401 is not retried
    assert "vl-wrong-secret-0000" not in srec.error
    assert "authentication" in diagnosis.diagnose(srec.http_status).lower()


def test_expired_entra_tokens_are_never_used(tmp_path, strict_sim, monkeypatch):
    """Tokens living 40 s with a 38 s refresh margin: a connect 2 s later must fetch a fresh one."""
    cred = FakeCredential(lifetime_s=40)
    monkeypatch.setattr(auth, "_new_default_credential", lambda tenant_id=None: cred)
    sc = scenario_for(tmp_path, strict_sim.port, "model: gpt-realtime\nauth: {kind: entra}")
    target = sc.targets[0].target
    provider = auth.CredentialProvider(target.auth, refresh_margin_s=38.0)
    seen = set()
    for _ in range(3):
        token = provider.headers()["Authorization"].removeprefix("Bearer ")
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        assert claims["exp"] - time.time() > 37.0  # never within the margin, let alone expired
        seen.add(token)
        time.sleep(2.1)
    assert cred.calls >= 3 and len(seen) >= 2


def test_validate_connect_diagnoses_each_target_without_printing_secrets(tmp_path, strict_sim):
    good = tmp_path / "good.yaml"
    bad = tmp_path / "bad.yaml"
    for path, env_name in ((good, "VL_TEST_KEY"), (bad, "VL_BAD_KEY")):
        path.write_text(textwrap.dedent(f"""
            name: probe
            target:
              name: strict
              endpoint: ws://127.0.0.1:{strict_sim.port}
              model: gpt-realtime
              auth: {{kind: api_key, api_key_env: {env_name}}}
            session: {{turn_detection: {{type: server_vad}}, input_audio_transcription: {{model: azure-speech}}}}
            conversation: [{{fixture: car_call_mom, pause_ms: 200}}]
            """), encoding="utf-8")
    env = {**os.environ, "VL_TEST_KEY": KEY, "VL_BAD_KEY": "vl-bad-key-424242"}
    ok = subprocess.run([sys.executable, "-m", "harness.cli", "validate", "--connect", str(good)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=90)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "✓ strict: connected" in ok.stdout and "turn complete" in ok.stdout
    nok = subprocess.run([sys.executable, "-m", "harness.cli", "validate", "--connect", str(bad)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=90)
    assert nok.returncode == 1
    assert "✗ strict" in nok.stdout and "authentication" in nok.stdout.lower()
    for out in (ok.stdout + ok.stderr, nok.stdout + nok.stderr):
        assert KEY not in out and "vl-bad-key-424242" not in out
