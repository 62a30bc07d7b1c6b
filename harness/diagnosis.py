"""Connection diagnoses: a precise, newcomer-friendly sentence for why a connect or a credential failed
(HTTP status of the upgrade, DNS, TLS, timeout, refusal, Entra sign-in), with secrets redacted.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, Mapping

from .protocol.endpoint import API_VERSIONS, DEFAULT_SCOPE
from .redaction import redact, redact_exception


class Diagnosed(RuntimeError):
    """An error whose message already is the diagnosis (auth.AuthError): ``diagnose`` passes it on."""


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
        if isinstance(exc, Diagnosed):
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
