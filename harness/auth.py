"""Credentials, secret redaction and connection diagnoses: the one place that touches secrets.

Entra ID uses ONE azure-identity ``DefaultAzureCredential`` per process (shared by every caller)
and caches its token, refreshing it when less than ``refresh_margin_s`` is left, so a multi-hour
soak never connects with an expired or nearly expired token. The sync API is used on purpose:
the harness runs under gevent, whose monkey patching makes azure-identity's HTTP calls (managed
identity/IMDS, workload identity) and its ``az`` subprocess (Azure CLI credential) cooperative,
so a refresh blocks only the greenlet doing it. Every secret read here is registered with the
process-wide redactor, which log records, run metadata and error messages go through.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import threading
import time
from typing import Any, Callable, Mapping
from urllib.parse import quote, quote_plus, unquote_plus

from .protocol.endpoint import API_VERSIONS, DEFAULT_SCOPE, LEGACY_TOKEN_PARAM, AuthConfig, is_secret_param

log = logging.getLogger("voiceload.auth")

DEFAULT_REFRESH_MARGIN_S = 300.0  # same as azure-identity's own refresh offset, so its cache hands out a new token
MIN_VALIDITY_S = 30.0  # a token with less left than this is never used for a connect
RETRY_INTERVAL_S = 10.0  # after a failed or unhelpful refresh, keep using a valid token this long before retrying
MIN_SECRET_LEN = 6  # shorter values would mangle ordinary text and are not real keys/tokens
MAX_SECRETS = 256  # oldest dropped first; stale tokens are still caught by the Bearer/JWT patterns
MASK = "***"


class AuthError(RuntimeError):
    """A credential could not be produced. Messages name variables and scopes, never values."""


# --- redaction ----------------------------------------------------------------------------------

_KV = re.compile(r"""(?i)(["']?\b(?:api[-_]?key|ocp-apim-subscription-key|x-api-key|agent[-_]access[-_]token|"""
                 r"""access[-_]token|refresh[-_]token|client[-_]secret|password|token|sig)["']?\s*[:=]\s*["']?)"""
                 r"""(?!\*\*\*)[^\s"'&,;}\]]+""")
_AUTH = re.compile(r"""(?i)(["']?\bauthorization["']?\s*[:=]\s*["']?(?:(?:bearer|basic)(?:\s+|%20|\+))?)"""
                   r"""(?!\*\*\*)[^\s"'&,;}\]]+""")
_BEARER = re.compile(r"(?i)\b(bearer(?:\s+|%20|\+))(?!\*\*\*)[A-Za-z0-9\-._~+/=%]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_QUERY = re.compile(r"([?&])([^=&\s#]+)=([^&\s#\"']*)")
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(@)", re.I)


class Redactor:
    """Replaces registered secret values and anything shaped like a credential with ``***``."""

    def __init__(self) -> None:
        self._secrets: dict[str, None] = {}  # insertion-ordered set
        self._lock = threading.Lock()  # held only for set/regex updates, never across I/O
        self._regex: re.Pattern[str] | None = None

    def register(self, value: str | None) -> None:
        if not value or len(value) < MIN_SECRET_LEN or value in self._secrets:
            return
        with self._lock:
            self._secrets.update(dict.fromkeys((value, quote_plus(value), quote(value, safe=""))))
            while len(self._secrets) > MAX_SECRETS:
                del self._secrets[next(iter(self._secrets))]
            ordered = sorted(self._secrets, key=len, reverse=True)  # longest first: no partial leftovers
            self._regex = re.compile("|".join(re.escape(s) for s in ordered))

    def redact(self, text: Any) -> str:
        text = text if isinstance(text, str) else str(text)
        regex = self._regex
        if regex is not None:
            text = regex.sub(MASK, text)
        text = _AUTH.sub(lambda m: m.group(1) + MASK, text)
        text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
        text = _KV.sub(lambda m: m.group(1) + MASK, text)
        text = _JWT.sub(MASK, text)
        text = _USERINFO.sub(lambda m: m.group(1) + MASK + m.group(2), text)
        return _QUERY.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}"
                          if is_secret_param(unquote_plus(m.group(2))) and m.group(3) else m.group(0), text)


REDACTOR = Redactor()


def register_secret(value: str | None) -> None:
    REDACTOR.register(value)


def redact(text: Any) -> str:
    """``text`` with every registered secret and credential-shaped value masked."""
    return REDACTOR.redact("" if text is None else text)


def redact_exception(exc: BaseException) -> str:
    """``Type: message`` for an exception and its causes, safe to print or record."""
    parts, seen, cur = [], set(), exc
    while cur is not None and id(cur) not in seen and len(parts) < 4:
        seen.add(id(cur))
        parts.append(f"{type(cur).__name__}: {cur}")
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return redact(" <- ".join(parts))


class RedactingFilter(logging.Filter):
    """Redacts a record's message (with its args merged in), exception text and stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_voiceload_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # bad format args: keep what we can
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._voiceload_redacted = True
        return True


_FILTER = RedactingFilter()
_FACTORY_INSTALLED = False


def install_log_redaction() -> None:
    """Redact every log record: a filter on the root logger and every existing handler, plus a
    record factory so records reaching handlers added later (Locust's, pytest's) are clean too."""
    global _FACTORY_INSTALLED
    root = logging.getLogger()
    targets: list[Any] = [root, *root.handlers]
    for lg in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(lg, logging.Logger):
            targets.extend(lg.handlers)
    for t in targets:
        if _FILTER not in t.filters:
            t.addFilter(_FILTER)
    if not _FACTORY_INSTALLED:
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _FILTER.filter(record)
            return record

        logging.setLogRecordFactory(factory)
        _FACTORY_INSTALLED = True


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


# --- diagnosis ----------------------------------------------------------------------------------

def _status_of(exc: Any) -> tuple[int | None, Mapping[str, str], bytes]:
    resp = getattr(exc, "response", None)
    for obj in (exc, resp):
        if obj is None:
            continue
        for attr in ("status", "status_code"):
            value = getattr(obj, attr, None)
            if isinstance(value, int) and 100 <= value < 600:
                headers = getattr(obj, "headers", None) or {}
                body = getattr(obj, "body", b"") or b""
                # websockets hands the body over as a bytearray: str() of it would print bytearray(b'...')
                return value, headers, (bytes(body) if isinstance(body, (bytes, bytearray, memoryview))
                                        else str(body).encode())
    return None, {}, b""


def _header(headers: Mapping[str, str] | Any, name: str) -> str | None:
    try:
        for k, v in headers.items():
            if k.lower() == name:
                return str(v)
    except AttributeError:
        pass
    return None


def _diagnose_status(status: int, headers: Mapping[str, str] | Any = None, body: bytes = b"") -> str:
    text = redact(body.decode("utf-8", "replace").strip())[:300] if body else ""
    detail = f" Server said: {text}" if text else ""
    headers = headers or {}
    if status == 400 and "api-version" in text.lower():
        return (f"unsupported api-version (HTTP 400): set target.api_version to one the resource supports "
                f"(known: {', '.join(API_VERSIONS)}).{detail}")
    if status == 400:
        return f"bad request (HTTP 400): check target.model / agent parameters and target.api_version.{detail}"
    if status == 401:
        return (f"authentication failed (HTTP 401): check the key (auth.api_key_env) or, for Entra ID, that the "
                f"token scope is {DEFAULT_SCOPE} and `az login` used the right tenant; agent mode needs Entra ID."
                f"{detail}")
    if status == 403:
        return (f"forbidden (HTTP 403): the identity likely lacks the 'Azure AI User' (or 'Cognitive Services "
                f"User') role on the resource (new role assignments take a few minutes), or the resource's "
                f"network rules block this client.{detail}")
    if status == 404:
        return (f"not found (HTTP 404): wrong path or region / resource not found: use the resource endpoint "
                f"(https://<resource>.services.ai.azure.com) without /voice-live/realtime, and check the region "
                f"and the model or agent name.{detail}")
    if status in (429, 503):
        after = _header(headers, "retry-after")
        wait = f" (Retry-After {after} s)" if after else ""
        what = "throttled" if status == 429 else "service busy"
        return (f"{what} (HTTP {status}){wait}: ramp up more slowly, lower concurrency, or ask for more quota."
                f"{detail}")
    if 300 <= status < 400:
        return (f"redirected (HTTP {status}) to {redact(_header(headers, 'location') or '?')}: redirects are not "
                f"followed so credentials are never forwarded; use the final endpoint.")
    if status >= 500:
        return f"server error (HTTP {status}): retry later; if it persists, report the time and region.{detail}"
    return f"handshake refused (HTTP {status}).{detail}"


def diagnose(exc_or_status: BaseException | int | None, *, host: str | None = None) -> str:
    """A precise, newcomer-friendly explanation of a connection failure, without secrets."""
    if exc_or_status is None:
        return "unknown failure"
    if isinstance(exc_or_status, int):
        return _diagnose_status(exc_or_status)
    chain, cur = [], exc_or_status
    while cur is not None and cur not in chain and len(chain) < 6:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    where = f" {host}" if host else ""
    for exc in chain:
        status, headers, body = _status_of(exc)
        if status is not None:
            return _diagnose_status(status, headers, body)
    for exc in chain:
        kind = getattr(exc, "kind", None)
        msg = redact(str(exc))
        name = type(exc).__name__
        if isinstance(exc, AuthError):
            return msg
        if isinstance(exc, socket.gaierror) or kind == "dns" or "name or service not known" in msg.lower():
            return (f"cannot resolve host{where} ({msg}): check the resource name/region in target.endpoint "
                    f"and your DNS/proxy")
        if isinstance(exc, ssl.SSLCertVerificationError) or "certificate" in msg.lower():
            return (f"TLS certificate problem ({msg}): the host name may not match the certificate (wrong "
                    f"endpoint?) or a proxy intercepts TLS (set SSL_CERT_FILE to its CA bundle)")
        if isinstance(exc, ssl.SSLError) or kind == "tls":
            return f"TLS handshake failed ({msg}): check the endpoint uses https/wss on port 443 and any proxy"
        if isinstance(exc, (TimeoutError, socket.timeout)) or kind == "timeout" or name == "Timeout":
            return (f"timed out connecting{where} ({msg}): network, firewall or proxy, or the client is "
                    f"overloaded; raise target.open_timeout_s only if the network is known to be slow")
        if isinstance(exc, ConnectionRefusedError) or kind == "tcp":
            return (f"connection refused or unreachable{where} ({msg}): for a local simulator check it is "
                    f"running on that port; otherwise check firewall/proxy settings")
        if name == "CredentialUnavailableError":
            return (f"no Entra ID credential available: run `az login` (or set AZURE_CLIENT_ID/AZURE_TENANT_ID/"
                    f"AZURE_CLIENT_SECRET, or use a managed identity), or use auth.kind api_key. ({msg[:300]})")
        if name == "ClientAuthenticationError":
            return f"Entra ID sign-in failed: {msg[:300]}"
    return redact_exception(exc_or_status)[:500]
