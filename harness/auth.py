"""Credentials: the auth headers and query secrets of a target, read right before each connect.

Entra ID uses ONE azure-identity ``DefaultAzureCredential`` per process (shared by every caller)
and caches its token, refreshing it when less than ``refresh_margin_s`` is left, so a multi-hour
soak never connects with an expired or nearly expired token. The sync API is used on purpose:
the harness runs under gevent, whose monkey patching makes azure-identity's HTTP calls (managed
identity/IMDS, workload identity) and its ``az`` subprocess (Azure CLI credential) cooperative,
so a refresh blocks only the greenlet doing it. Every secret read here is registered with the
process-wide redactor (redaction.py); failures are explained by diagnosis.py.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Mapping

from .diagnosis import Diagnosed, diagnose
from .protocol.endpoint import DEFAULT_SCOPE, LEGACY_TOKEN_PARAM, AuthConfig
from .redaction import register_secret

log = logging.getLogger("voiceload.auth")

DEFAULT_REFRESH_MARGIN_S = 300.0  # same as azure-identity's own refresh offset, so its cache hands out a new token
MIN_VALIDITY_S = 30.0  # a token with less left than this is never used for a connect
RETRY_INTERVAL_S = 10.0  # after a failed or unhelpful refresh, keep using a valid token this long before retrying


class AuthError(Diagnosed):
    """A credential could not be produced. Messages name variables and scopes, never values."""


# --- Entra tokens -------------------------------------------------------------------------------

class _TokenSource:
    """One credential + scope: the cached token and the single-flight refresh around it."""

    def __init__(self, credential: Any, scope: str, tenant_id: str | None) -> None:
        self.credential, self.scope, self.tenant_id = credential, scope, tenant_id
        # Created when the first provider needs it, i.e. after gevent patched threading (Locust and
        # `voiceload run` patch first), so waiting greenlets yield instead of blocking the hub.
        self._lock = threading.Lock()
        self._token: Any = None  # azure.core.credentials.AccessToken
        self._next_attempt = 0.0
        self.refreshes = 0

    def get(self, margin_s: float, clock: Callable[[], float]) -> str:
        tok, now = self._token, clock()
        if tok is not None and tok.expires_on - now > margin_s:
            return tok.token
        usable = tok is not None and tok.expires_on - now > MIN_VALIDITY_S
        if usable and not self._lock.acquire(blocking=False):
            return tok.token  # someone else is refreshing; the current token is still good
        if not usable:
            self._lock.acquire()
        try:
            return self._refresh(margin_s, clock)
        finally:
            self._lock.release()

    def _refresh(self, margin_s: float, clock: Callable[[], float]) -> str:
        tok, now = self._token, clock()
        if tok is not None and tok.expires_on - now > margin_s:
            return tok.token  # refreshed while we waited
        usable = tok is not None and tok.expires_on - now > MIN_VALIDITY_S
        if usable and now < self._next_attempt:
            return tok.token
        try:
            kwargs = {"tenant_id": self.tenant_id} if self.tenant_id else {}
            new = self.credential.get_token(self.scope, **kwargs)
            self.refreshes += 1
        except Exception as exc:
            self._next_attempt = now + RETRY_INTERVAL_S
            if usable:
                log.warning("Entra token refresh failed (%s); the current token is valid %.0f s more",
                            diagnose(exc), tok.expires_on - now)
                return tok.token
            raise AuthError(f"cannot get an Entra ID token for scope {self.scope}: {diagnose(exc)}") from None
        register_secret(new.token)
        left = new.expires_on - clock()
        if left <= MIN_VALIDITY_S:
            raise AuthError(f"the credential returned a token for {self.scope} that expires in {left:.0f} s")
        self._token = new
        self._next_attempt = now + RETRY_INTERVAL_S if left <= margin_s else 0.0
        return new.token


_SHARED_LOCK = threading.Lock()  # guards the two dicts; never held across I/O
_CREDENTIALS: dict[str | None, Any] = {}
_SOURCES: dict[tuple[int, str | None, str], _TokenSource] = {}


def _new_default_credential(tenant_id: str | None) -> Any:
    from azure.identity import DefaultAzureCredential

    # azure-identity logs every failed attempt as a WARNING with the whole credential chain; our
    # AuthError carries that same text to the console once (diagnose), so its logger stays quiet.
    logging.getLogger("azure.identity").setLevel(max(logging.ERROR, logging.getLogger("azure.identity").level))

    kwargs = {"additionally_allowed_tenants": [tenant_id]} if tenant_id else {}
    return DefaultAzureCredential(**kwargs)


def shared_credential(tenant_id: str | None = None) -> Any:
    """The process's one DefaultAzureCredential (per tenant)."""
    cred = _CREDENTIALS.get(tenant_id)
    if cred is None:
        fresh = _new_default_credential(tenant_id)  # no I/O in the constructor
        with _SHARED_LOCK:
            cred = _CREDENTIALS.setdefault(tenant_id, fresh)
    return cred


def _shared_source(credential: Any, scope: str, tenant_id: str | None) -> _TokenSource:
    key = (id(credential), tenant_id, scope)  # the source keeps the credential alive: ids stay unique
    src = _SOURCES.get(key)
    if src is None:
        with _SHARED_LOCK:
            src = _SOURCES.setdefault(key, _TokenSource(credential, scope, tenant_id))
    return src


def reset_shared_credentials() -> None:
    """Forget cached credentials and tokens (tests; after `az login` as another identity)."""
    with _SHARED_LOCK:
        _CREDENTIALS.clear()
        _SOURCES.clear()


class CredentialProvider:
    """Produces the auth headers and query secrets for one target, right before each connect."""

    def __init__(self, config: AuthConfig, *, credential: Any | None = None,
                 refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S, env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.refresh_margin_s = refresh_margin_s
        self._credential = credential
        self._env = os.environ if env is None else env
        self._clock = clock

    def headers(self) -> dict[str, str]:
        c = self.config
        if c.kind == "none" or c.in_query:
            return {}
        if c.kind == "api_key":
            return {"api-key": self._env_secret(c.api_key_env, "api_key_env")}
        return {"Authorization": f"Bearer {self._bearer()}"}

    def query_secrets(self) -> dict[str, str]:
        c, out = self.config, {}
        if c.legacy_agent:
            out[LEGACY_TOKEN_PARAM] = self._agent_token()
        if c.in_query and c.kind == "api_key":
            out["api-key"] = self._env_secret(c.api_key_env, "api_key_env")
        elif c.in_query and c.kind in ("entra", "token"):
            out["Authorization"] = f"Bearer {self._bearer()}"
        return out

    def check(self) -> None:
        """Resolve every credential now, so a missing variable or `az login` fails before load starts."""
        self.headers()
        self.query_secrets()

    def token_source(self) -> _TokenSource:
        c = self.config
        cred = self._credential if self._credential is not None else shared_credential(c.tenant_id)
        return _shared_source(cred, c.scope or DEFAULT_SCOPE, c.tenant_id)

    def _bearer(self) -> str:
        if self.config.kind == "token":
            return self._env_secret(self.config.token_env, "token_env")
        return self.token_source().get(self.refresh_margin_s, self._clock)

    def _agent_token(self) -> str:
        c = self.config
        if c.agent_token_env:
            return self._env_secret(c.agent_token_env, "agent.access_token_env")
        if c.kind == "entra":  # what the classic samples do: an Entra token for https://ai.azure.com
            return self.token_source().get(self.refresh_margin_s, self._clock)
        raise AuthError("target.agent.access_token_env: a classic agent (agent_id) needs an access token: name the "
                        "environment variable that holds it, or use auth.kind entra")

    def _env_secret(self, var: str, field: str) -> str:
        value = self._env.get(var, "") if var else ""
        if not value.strip():
            state = "is empty" if var in self._env else "is not set"
            where = f"target.{field}" if field.startswith("agent") else f"target.auth.{field}"
            raise AuthError(f"environment variable {var or '(none)'} {state} ({where}); export it before the run, "
                            f"or use auth.kind entra (az login)")
        register_secret(value)
        return value.strip()
