"""Credentials: token caching/refresh, sharing, env secrets; redaction; connection diagnoses."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken

from harness import auth, diagnosis, redaction
from harness.protocol import endpoint as ep

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeCredential:
    """get_token(*scopes, **kw) -> AccessToken that lives ``lifetime`` seconds on ``clock``."""

    def __init__(self, clock, lifetime: float = 3600.0, delay: float = 0.0) -> None:
        self.clock, self.lifetime, self.delay = clock, lifetime, delay
        self.calls: list[tuple[tuple, dict]] = []
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def get_token(self, *scopes, **kwargs):
        with self._lock:
            self.calls.append((scopes, kwargs))
            n = len(self.calls)
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return AccessToken(f"eyJfake{n:04d}.payload{n:04d}.signature", int(self.clock() + self.lifetime))


@pytest.fixture(autouse=True)
def _fresh_shared_state():
    auth.reset_shared_credentials()
    yield
    auth.reset_shared_credentials()


def provider(cred, clock, **cfg) -> auth.CredentialProvider:
    return auth.CredentialProvider(ep.AuthConfig(**cfg), credential=cred, clock=clock, env={})


# --- Entra tokens --------------------------------------------------------------------------------

def test_token_cached_then_refreshed_within_margin():
    clock = Clock()
    cred = FakeCredential(clock, lifetime=3600)
    p = provider(cred, clock)
    first = p.headers()["Authorization"]
    assert first.startswith("Bearer eyJfake0001")
    clock.t += 3600 - 301  # 301 s left: still outside the 300 s margin
    assert p.headers()["Authorization"] == first and len(cred.calls) == 1
    clock.t += 2  # 299 s left: refresh before connecting
    assert p.headers()["Authorization"] == "Bearer eyJfake0002.payload0002.signature"
    assert len(cred.calls) == 2


def test_never_connects_with_an_expired_or_nearly_expired_token_over_a_long_soak():
    clock = Clock()
    cred = FakeCredential(clock, lifetime=400)  # short-lived tokens force a refresh every few connects
    p = provider(cred, clock)
    expiry: dict[str, float] = {}
    for _ in range(700):  # 8 hours of connects, 41 s apart
        token = p.headers()["Authorization"].removeprefix("Bearer ")
        expiry.setdefault(token, clock.t + 400)
        assert expiry[token] - clock.t > auth.DEFAULT_REFRESH_MARGIN_S
        clock.t += 41.0
    assert len(cred.calls) == len(expiry) > 100


def test_uses_configured_scope_and_tenant():
    clock = Clock()
    cred = FakeCredential(clock)
    p = provider(cred, clock, scope=ep.LEGACY_SCOPE, tenant_id="tenant-123")
    p.headers()
    assert cred.calls == [((ep.LEGACY_SCOPE,), {"tenant_id": "tenant-123"})]
    cred2 = FakeCredential(clock)
    provider(cred2, clock).headers()
    assert cred2.calls == [(("https://ai.azure.com/.default",), {})]


def test_one_default_credential_per_process(monkeypatch):
    made: list[FakeCredential] = []
    clock = Clock()

    def factory(tenant_id):
        made.append(FakeCredential(clock))
        return made[-1]

    monkeypatch.setattr(auth, "_new_default_credential", factory)
    a = auth.CredentialProvider(ep.AuthConfig(), clock=clock, env={})
    b = auth.CredentialProvider(ep.AuthConfig(), clock=clock, env={})
    assert a.headers() == b.headers()
    assert len(made) == 1 and len(made[0].calls) == 1  # one credential, one token, two providers
    assert auth.shared_credential() is made[0]
    auth.CredentialProvider(ep.AuthConfig(tenant_id="other"), clock=clock, env={}).headers()
    assert len(made) == 2


def test_real_default_credential_is_shared_without_network():
    pytest.importorskip("azure.identity")
    first, second = auth.shared_credential(), auth.shared_credential()
    assert first is second and type(first).__name__ == "DefaultAzureCredential"


def test_concurrent_threads_cause_a_single_refresh():
    clock = Clock()
    cred = FakeCredential(clock, delay=0.2)
    providers = [provider(cred, clock) for _ in range(4)]
    out: list[str] = []
    threads = [threading.Thread(target=lambda p=p: out.append(p.headers()["Authorization"]))
               for p in providers for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cred.calls) == 1 and len(set(out)) == 1 and len(out) == 20


def test_concurrent_greenlets_cause_a_single_refresh_under_gevent():
    """In a monkey-patched process (as under Locust) waiting greenlets yield instead of blocking."""
    script = r"""
from gevent import monkey; monkey.patch_all()
import json, time, gevent
from azure.core.credentials import AccessToken
from harness import auth
from harness.protocol.endpoint import AuthConfig
calls = []
class Cred:
    def get_token(self, *scopes, **kw):
        calls.append(scopes)
        time.sleep(0.2)  # patched: yields to the other greenlets
        return AccessToken("eyJgevent.token.%d" % len(calls), int(time.time()) + 3600)
cred = Cred()
ticks = []
ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(10)])
ps = [auth.CredentialProvider(AuthConfig(), credential=cred, env={}) for _ in range(50)]
jobs = [gevent.spawn(p.headers) for p in ps]
gevent.joinall(jobs + [ticker], timeout=10)
print(json.dumps({"calls": len(calls), "distinct": len({j.value["Authorization"] for j in jobs}),
                  "ok": all(j.successful() for j in jobs), "ticks": len(ticks)}))
"""
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout.strip().splitlines()[-1])
    assert data == {"calls": 1, "distinct": 1, "ok": True, "ticks": 10}


def test_refresh_failure_keeps_a_still_valid_token_then_fails_clearly(caplog):
    clock = Clock()
    cred = FakeCredential(clock, lifetime=3600)
    p = provider(cred, clock)
    first = p.headers()
    clock.t += 3600 - 200  # inside the margin, still valid
    cred.fail = RuntimeError("IMDS unavailable")
    with caplog.at_level(logging.WARNING, logger="voiceload.auth"):
        assert p.headers() == first
    assert "refresh failed" in caplog.text
    clock.t += 190  # 10 s left: unusable
    with pytest.raises(auth.AuthError, match="cannot get an Entra ID token for scope https://ai.azure.com") as info:
        p.headers()
    assert "eyJfake" not in str(info.value)


def test_credential_returning_stale_tokens_is_not_hammered_and_expired_is_refused():
    clock = Clock()
    cred = FakeCredential(clock, lifetime=120)  # always inside the 300 s margin
    p = provider(cred, clock)
    p.headers()
    for _ in range(20):
        clock.t += 0.1
        p.headers()
    assert len(cred.calls) == 1  # retried no more often than RETRY_INTERVAL_S
    clock.t += auth.RETRY_INTERVAL_S
    p.headers()
    assert len(cred.calls) == 2
    dead = FakeCredential(clock, lifetime=-5)
    with pytest.raises(auth.AuthError, match="expires in"):
        provider(dead, clock).headers()


# --- keys and explicit tokens from the environment ---------------------------------------------

SECRET_KEY = "k3y-VALUE-0123456789abcdef0123456789"


def test_api_key_header_and_missing_variable():
    ok = auth.CredentialProvider(ep.AuthConfig(kind="api_key"), env={"AZURE_VOICELIVE_API_KEY": SECRET_KEY})
    assert ok.headers() == {"api-key": SECRET_KEY} and ok.query_secrets() == {}
    assert SECRET_KEY not in redaction.redact(f"sent {SECRET_KEY}")
    missing = auth.CredentialProvider(ep.AuthConfig(kind="api_key"), env={"OTHER": SECRET_KEY})
    with pytest.raises(auth.AuthError, match="AZURE_VOICELIVE_API_KEY is not set") as info:
        missing.headers()
    assert "target.auth.api_key_env" in str(info.value) and SECRET_KEY not in str(info.value)
    empty = auth.CredentialProvider(ep.AuthConfig(kind="api_key", api_key_env="MY_KEY"), env={"MY_KEY": "  "})
    with pytest.raises(auth.AuthError, match="MY_KEY is empty"):
        empty.check()


def test_explicit_token_and_in_query_modes():
    env = {"AZURE_VOICELIVE_TOKEN": "eyJexplicit.token.value", "AZURE_VOICELIVE_API_KEY": SECRET_KEY}
    tok = auth.CredentialProvider(ep.AuthConfig(kind="token"), env=env)
    assert tok.headers() == {"Authorization": "Bearer eyJexplicit.token.value"}
    with pytest.raises(auth.AuthError, match="AZURE_VOICELIVE_TOKEN is not set"):
        auth.CredentialProvider(ep.AuthConfig(kind="token"), env={}).headers()
    q = auth.CredentialProvider(ep.AuthConfig(kind="api_key", in_query=True), env=env)
    assert q.headers() == {} and q.query_secrets() == {"api-key": SECRET_KEY}
    qt = auth.CredentialProvider(ep.AuthConfig(kind="token", in_query=True), env=env)
    assert qt.query_secrets() == {"Authorization": "Bearer eyJexplicit.token.value"}
    assert auth.CredentialProvider(ep.AuthConfig(kind="none"), env=env).headers() == {}


def test_classic_agent_token_from_env_or_entra():
    target = ep.Target(name="t", endpoint="https://r.services.ai.azure.com",
                       agent=ep.AgentConfig(agent_id="a", project_name="p", access_token_env="AGENT_TOKEN"))
    p = auth.CredentialProvider(target.auth, env={"AGENT_TOKEN": "eyJagent.access.token"},
                                credential=FakeCredential(Clock()), clock=Clock())
    assert p.query_secrets() == {"agent-access-token": "eyJagent.access.token"}
    url = ep.build_url(target, secrets=p.query_secrets())
    assert "agent-access-token=eyJagent.access.token" in url and "eyJagent" not in redaction.redact(url)
    with pytest.raises(auth.AuthError, match="AGENT_TOKEN is not set.*target.agent.access_token_env"):
        auth.CredentialProvider(target.auth, env={}, credential=FakeCredential(Clock())).query_secrets()
    clock = Clock()
    entra = ep.Target(name="t", endpoint="https://r.services.ai.azure.com",
                      agent=ep.AgentConfig(agent_id="a", project_name="p"))
    cred = FakeCredential(clock)
    pe = auth.CredentialProvider(entra.auth, credential=cred, clock=clock, env={})
    assert pe.query_secrets()["agent-access-token"] == pe.headers()["Authorization"].removeprefix("Bearer ")
    assert len(cred.calls) == 1
    keyed = ep.Target(name="t", endpoint="https://r.services.ai.azure.com", auth=ep.AuthConfig(kind="api_key"),
                      agent=ep.AgentConfig(agent_id="a", project_name="p"))
    with pytest.raises(auth.AuthError, match="access_token_env"):
        auth.CredentialProvider(keyed.auth, env={}).query_secrets()


# --- redaction -----------------------------------------------------------------------------------

def test_registered_secrets_and_their_encodings_are_redacted():
    secret = "s3cr3t/with+plus=="
    redaction.register_secret(secret)
    from urllib.parse import quote, quote_plus

    text = f"a {secret} b {quote_plus(secret)} c {quote(secret, safe='')}"
    assert redaction.redact(text) == "a *** b *** c ***"
    redaction.register_secret("abc")  # too short to be a real secret: ignored, text not mangled
    assert redaction.redact("abcdef") == "abcdef"


@pytest.mark.parametrize("text, leaked", [
    ("api-key: 0123456789abcdef", "0123456789abcdef"),
    ("{'api-key': 'ZZZsecretZZZ', 'User-Agent': 'x'}", "ZZZsecretZZZ"),
    ("Authorization: Bearer abc.def.ghi-jkl", "abc.def.ghi-jkl"),
    ('{"Authorization": "Bearer QWERTYUIOPASDF"}', "QWERTYUIOPASDF"),
    ("got Bearer longtokenvalue123 back", "longtokenvalue123"),
    ("jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl in text", "eyJhbGciOiJSUzI1NiJ9"),
    ("wss://h/x?api-version=1&agent-access-token=tok123456&model=m", "tok123456"),
    ("GET /?Authorization=Bearer%20abcdefghijk HTTP/1.1", "abcdefghijk"),
    ("https://a.blob.core.windows.net/c/f?sv=1&sig=SiGnAtUrE%3D", "SiGnAtUrE"),
    ("token=plainvalue99", "plainvalue99"),
])
def test_pattern_redaction(text, leaked):
    out = redaction.redact(text)
    assert leaked not in out and "***" in out


def test_redaction_keeps_ordinary_text():
    text = "error code: 401, max_response_output_tokens: 4096, token scope https://ai.azure.com/.default"
    assert redaction.redact(text) == text
    assert redaction.redact(redaction.redact("api-key: 0123456789abcdef")) == "api-key: ***"


@pytest.fixture
def restore_logging(monkeypatch):
    """install_log_redaction() changes process-wide logging: undo it for the other tests."""
    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(redaction, "_FACTORY_INSTALLED", False)
    yield
    logging.setLogRecordFactory(factory)
    root = logging.getLogger()
    for t in [root, *root.handlers, *[h for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger) for h in lg.handlers]]:
        t.removeFilter(redaction._FILTER)


def test_log_records_are_redacted(caplog, restore_logging):
    secret = "LOGSECRET-0123456789"
    redaction.register_secret(secret)
    redaction.install_log_redaction()
    redaction.install_log_redaction()  # idempotent
    log = logging.getLogger("voiceload.test.child")
    with caplog.at_level(logging.INFO):
        log.info("connecting with %s and %r", secret, {"api-key": "unregistered-key-value"})
        try:
            raise RuntimeError(f"boom {secret}")
        except RuntimeError:
            log.exception("failed: Authorization: Bearer %s", "abcdefghijklmnop")
    assert secret not in caplog.text and "unregistered-key-value" not in caplog.text
    assert "abcdefghijklmnop" not in caplog.text and "***" in caplog.text
    assert all(secret not in r.getMessage() for r in caplog.records)
    root_filters = logging.getLogger().filters
    assert any(isinstance(f, redaction.RedactingFilter) for f in root_filters)


def test_redact_exception_follows_the_chain():
    secret = "EXCSECRET-0123456789"
    redaction.register_secret(secret)
    try:
        try:
            raise ValueError(f"inner {secret}")
        except ValueError as inner:
            raise RuntimeError("outer api-key: abcdef0123456") from inner
    except RuntimeError as exc:
        text = redaction.redact_exception(exc)
    assert text.startswith("RuntimeError: outer api-key: ***") and "ValueError: inner ***" in text
    assert secret not in text


# --- diagnose ------------------------------------------------------------------------------------

def invalid_status(status: int, headers: dict | None = None, body: bytes = b""):
    from websockets.datastructures import Headers
    from websockets.exceptions import InvalidStatus
    from websockets.http11 import Response

    return InvalidStatus(Response(status, "reason", Headers(headers or {}), body))


@pytest.mark.parametrize("exc, expected", [
    (401, "authentication failed: check the key"),
    (403, "'Azure AI User'"),
    (404, "wrong path or region / resource not found"),
    (429, "throttled"),
    (503, "service busy"),
    (500, "server error"),
    (302, "redirected"),
])
def test_diagnose_status_codes(exc, expected):
    text = diagnosis.diagnose(exc).replace(" (HTTP 401)", "")
    assert expected in text
    if exc == 401:
        assert "https://ai.azure.com/.default" in text
    if exc == 403:
        assert "Cognitive Services User" in text


def test_diagnose_invalid_status_objects():
    assert "Retry-After 7 s" in diagnosis.diagnose(invalid_status(429, {"Retry-After": "7"}))
    text = diagnosis.diagnose(invalid_status(400, body=b'{"error":{"message":"Unsupported api-version 2099-01-01"}}'))
    assert text.startswith("unsupported api-version") and "2026-07-15" in text
    assert diagnosis.diagnose(invalid_status(400, body=b"missing model")).startswith("bad request")
    leaky = invalid_status(401, body=b"bad key api-key: 0123456789abcdef")
    assert "0123456789abcdef" not in diagnosis.diagnose(leaky)
    try:  # wrapped, as the SDK's ConnectionError wraps the transport error
        try:
            raise invalid_status(403)
        except Exception as inner:
            raise RuntimeError("Failed to establish WebSocket connection") from inner
    except RuntimeError as outer:
        assert "'Azure AI User'" in diagnosis.diagnose(outer)


class FakeConnectError(Exception):
    """Shaped like harness.client.transport.ConnectError."""

    def __init__(self, kind, message, status=None, headers=None, body=b""):
        super().__init__(message)
        self.kind, self.status, self.headers, self.body = kind, status, headers or {}, body


@pytest.mark.parametrize("exc, expected", [
    (socket.gaierror(-2, "Name or service not known"), "cannot resolve host"),
    (FakeConnectError("dns", "cannot resolve nope.services.ai.azure.com"), "check the resource name/region"),
    (ssl.SSLCertVerificationError(1, "certificate verify failed: Hostname mismatch"), "certificate"),
    (ssl.SSLError(1, "wrong version number"), "TLS handshake failed"),
    (TimeoutError("timed out"), "timed out"),
    (FakeConnectError("timeout", "no handshake within 30s"), "timed out"),
    (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
    (FakeConnectError("handshake", "refused", status=403), "'Azure AI User'"),
    (auth.AuthError("environment variable X is not set"), "environment variable X is not set"),
])
def test_diagnose_exceptions(exc, expected):
    assert expected in diagnosis.diagnose(exc)


def test_diagnose_entra_credential_unavailable():
    from azure.identity import CredentialUnavailableError

    text = diagnosis.diagnose(CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token"))
    assert "az login" in text and "api_key" in text


def test_diagnose_unknown_is_redacted():
    redaction.register_secret("UNKNOWNSECRET-12345")
    text = diagnosis.diagnose(KeyError("UNKNOWNSECRET-12345"))
    assert text.startswith("KeyError") and "UNKNOWNSECRET" not in text
    assert diagnosis.diagnose(None) == "unknown failure"
