"""Opening-handshake checks, pure: path, api-version, model/agent parameters and credentials.

Decides what the service would answer before the WebSocket upgrade: 404 for a wrong path, 400 for
a missing/unknown api-version or no model/agent, 401 for missing or wrong credentials when the
profile requires them. Bodies use Azure's ``{"error": {"code", "message"}}`` envelope; the exact
wording of the real Voice Live gateway is unconfirmed (docs/simulator.md). Credentials are never
put in a log line: ``describe()`` shows ``api-key=***``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import parse_qs, urlsplit

from ..protocol.endpoint import API_VERSIONS, REALTIME_PATH, api_version_problem
from .profiles import AuthConfig

log = logging.getLogger("voiceload.simulator")
AGENT_V2_PARAMS = ("agent-name", "agent-project-name", "agent-version", "conversation-id",
                   "agent-authentication-identity-client-id", "foundry-resource-override")
MSG_MISSING_KEY = ("Access denied due to missing subscription key or Authorization header. Make sure to include "
                   "an api-key or a Bearer token when making requests to an API.")
MSG_BAD_KEY = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
               "valid key for an active subscription and use a correct regional API endpoint for your resource.")


@dataclass
class Handshake:
    """The verdict on one upgrade request: accepted (status 101) with its parameters, or rejected."""

    status: int = 101
    body: dict[str, Any] | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    api_version: str = ""
    model: str | None = None
    agent: dict[str, Any] | None = None
    auth_kind: str = "none"  # api-key | bearer | agent-token | none
    query: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 101

    def describe(self) -> str:
        """A log line with every credential masked."""
        shown = {k: ("***" if _secret(k) else v) for k, v in self.query.items()}
        return f"{self.status} {shown} auth={self.auth_kind}"


def _secret(name: str) -> bool:
    n = name.lower()
    return n in ("api-key", "authorization", "agent-access-token") or "token" in n or "key" in n


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def reject(status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None,
           query: dict[str, str] | None = None) -> Handshake:
    return Handshake(status=status, body=error_body(code, message), headers=list(headers or []), query=query or {})


def check(path: str, headers: Mapping[str, str], auth: AuthConfig, now: float | None = None) -> Handshake:
    """Validate an upgrade request (``path`` includes the query string; ``headers`` case-insensitive)."""
    parts = urlsplit(path)
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    if parts.path.rstrip("/") != REALTIME_PATH:
        return reject(404, "404", "Resource not found", query=query)
    version = query.get("api-version")
    if not version:
        return reject(400, "BadRequest", "The api-version query parameter (?api-version=) is required for all "
                      f"requests. Supported versions: {', '.join(API_VERSIONS)}", query=query)
    problem = api_version_problem(version)
    newer = problem is not None and problem[1] and version[:10] > max(v[:10] for v in API_VERSIONS)
    if problem is not None and not newer:  # malformed, or a date we know the service never had
        return reject(400, "BadRequest", f"The api-version '{version}' is not supported. "
                      f"Supported versions: {', '.join(API_VERSIONS)}", query=query)
    if newer:  # newer than anything we know: accepted with a warning, never blocked
        log.warning("handshake: api-version %r is newer than this simulator knows; behaving as %s", version,
                    API_VERSIONS[-1])
    model = query.get("model") or None
    agent: dict[str, Any] | None = None
    if "agent-name" in query or any(k in query for k in AGENT_V2_PARAMS[2:]):
        if not query.get("agent-name") or not query.get("agent-project-name"):
            return reject(400, "BadRequest", "Both 'agent-name' and 'agent-project-name' are required to connect "
                          "to an agent.", query=query)
        agent = {"name": query["agent-name"], "project": query["agent-project-name"],
                 "agent_id": f"{query['agent-name']}:{query.get('agent-version', 'latest')}",
                 "thread_id": query.get("conversation-id"), "description": None}
    elif "agent-id" in query:
        missing = [k for k in ("agent-id", "agent-project-name", "agent-access-token") if not query.get(k)]
        if missing:
            return reject(400, "BadRequest", f"Classic agent mode needs {', '.join(missing)}.", query=query)
        agent = {"name": query["agent-id"], "project": query["agent-project-name"], "agent_id": query["agent-id"],
                 "thread_id": None, "description": None}
    if model is None and agent is None:
        return reject(400, "BadRequest", "Either 'model' or an agent ('agent-name' and 'agent-project-name') "
                      "must be specified in the query string.", query=query)
    verdict = _check_auth(query, headers, auth, time.time() if now is None else now)
    if verdict is not None:
        verdict.query = query
        return verdict
    kind = _auth_kind(query, headers)
    return Handshake(api_version=version, model=model, agent=agent, auth_kind=kind, query=query)


def _credentials(query: Mapping[str, str], headers: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    key = headers.get("api-key") or query.get("api-key")
    # Browsers pass "Authorization=Bearer%20<token>" in the query (parse_qs has already decoded it).
    authz = headers.get("Authorization") or next((v for k, v in query.items() if k.lower() == "authorization"), None)
    bearer = None
    if authz:
        scheme, _, value = authz.strip().partition(" ")
        bearer = value.strip() if scheme.lower() == "bearer" else ""
    return key, bearer, query.get("agent-access-token")


def _auth_kind(query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    key, bearer, agent_token = _credentials(query, headers)
    return "api-key" if key else "bearer" if bearer else "agent-token" if agent_token else "none"


def _check_auth(query: Mapping[str, str], headers: Mapping[str, str], auth: AuthConfig, now: float) -> Handshake | None:
    if not auth.required:
        return None
    key, bearer, agent_token = _credentials(query, headers)
    challenge = [("WWW-Authenticate", "Bearer")]
    if not key and bearer is None and not agent_token:
        return reject(401, "401", MSG_MISSING_KEY, challenge)
    if key and key in auth.api_keys:
        return None
    if bearer and (bearer in auth.bearer_tokens or (auth.accept_any_unexpired_jwt and jwt_ok(bearer, auth, now))):
        return None
    if agent_token and agent_token in auth.agent_tokens:
        return None
    return reject(401, "401", MSG_BAD_KEY, challenge)


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT-shaped string, unverified (this is a simulator, not an identity provider)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def jwt_ok(token: str, auth: AuthConfig, now: float) -> bool:
    """Unexpired, and its audience (or scope) is one of ``auth.jwt_audiences``."""
    claims = jwt_claims(token)
    if claims is None:
        return False
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or exp <= now:
        return False
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    scopes = str(claims.get("scp", "")).split()
    wanted = {a.rstrip("/") for a in auth.jwt_audiences}
    return any(isinstance(a, str) and a.rstrip("/") in wanted for a in auds) or \
        any(s.removesuffix("/.default").rstrip("/") in wanted for s in scopes)
