"""What a target is and which URL reaches it: pure data and string work, no I/O.

``build_url`` reproduces the official SDK's ``_prepare_url`` (azure-ai-voicelive 1.3.1,
``aio/_patch.py``) parameter for parameter, so a URL that works with the SDK works here and the
other way round; tests/test_endpoint.py checks that against the installed SDK. Secrets never live
in a Target: the URL is built right before each connect with the values auth.CredentialProvider
returns, and ``display_url`` masks them for logs, records and reports.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping
from urllib.parse import parse_qs, parse_qsl, unquote_plus, urlencode, urlparse, urlunparse

#: api-version values seen in the SDK and on Learn (docs/azure.md, shared protocol reference §1).
API_VERSIONS: tuple[str, ...] = ("2025-05-01-preview", "2025-10-01", "2026-01-01-preview", "2026-04-10",
                                 "2026-06-01-preview", "2026-07-15")
GA_API_VERSIONS: tuple[str, ...] = ("2025-10-01", "2026-04-10", "2026-07-15")
#: Newest GA version: the default of the SDK we mirror (1.3.x) and one of the two versions its live
#: tests run against, so it is the best-exercised choice. Previews (e.g. 2026-01-01-preview for
#: azure-realtime / auto_truncate) must be asked for explicitly with api_version.
DEFAULT_API_VERSION = "2026-07-15"
DEFAULT_MODEL = "gpt-realtime"
DEFAULT_SCOPE = "https://ai.azure.com/.default"
LEGACY_SCOPE = "https://cognitiveservices.azure.com/.default"
_VERSION_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
REALTIME_PATH = "/voice-live/realtime"
SCHEMES = ("https", "wss", "http", "ws")
#: The SDK's telemetry parameter (its User-Agent string). We never send it: it is not ours to claim.
SDK_TELEMETRY_PARAM = "x-ms-client-sdk"
LEGACY_TOKEN_PARAM = "agent-access-token"
AGENT_TOKEN_ENV = "AZURE_VOICELIVE_AGENT_TOKEN"
API_KEY_ENV = "AZURE_VOICELIVE_API_KEY"
TOKEN_ENV = "AZURE_VOICELIVE_TOKEN"
_SECRET_PARAMS = {"agent-access-token", "api-key", "authorization", "sig", "token", "access_token", "code",
                  "password", "client_secret"}
_SECRET_PARTS = ("token", "key", "secret", "password", "signature", "credential")
_AGENT_PARAMS = ("agent-name", "agent-project-name", "agent-version", "conversation-id",
                 "agent-authentication-identity-client-id", "foundry-resource-override", "agent-id")

Mode = Literal["model", "agent", "agent_legacy"]
AuthKind = Literal["none", "api_key", "entra", "token"]
AUTH_KINDS: tuple[str, ...] = ("none", "api_key", "entra", "token")


@dataclass
class AgentConfig:
    """A Foundry agent behind Voice Live.

    Current style (SDK ``agent_name``/``project_name``...): ``name`` + ``project_name``, optional
    ``version``, ``conversation_id``, ``authentication_identity_client_id``,
    ``foundry_resource_override``. Classic style (Agent Service v1, superseded): ``agent_id`` +
    ``project_name`` + an agent access token, read from the environment variable named by
    ``access_token_env`` or, with Entra auth and no variable, the same Entra token the connection
    uses (what Microsoft's classic samples do).
    """

    name: str | None = None
    project_name: str | None = None
    version: str | None = None
    conversation_id: str | None = None
    authentication_identity_client_id: str | None = None
    foundry_resource_override: str | None = None
    agent_id: str | None = None
    access_token_env: str | None = None

    @property
    def legacy(self) -> bool:
        return self.agent_id is not None and self.name is None


@dataclass
class AuthConfig:
    """How to authenticate. Values are names of environment variables, never secrets themselves.

    ``in_query`` sends the credential as the ``api-key`` / ``Authorization`` query parameter (the
    browser style Learn documents) instead of a header. ``agent_token_env`` is filled in by Target
    from a classic agent's ``access_token_env`` so a provider built from ``target.auth`` alone can
    produce the ``agent-access-token`` value.
    """

    kind: AuthKind = "entra"
    api_key_env: str = API_KEY_ENV
    token_env: str = TOKEN_ENV
    scope: str = DEFAULT_SCOPE
    tenant_id: str | None = None
    in_query: bool = False
    agent_token_env: str | None = None
    legacy_agent: bool = False


@dataclass
class Target:
    """One real system under test: a Voice Live endpoint in model or agent mode."""

    name: str
    endpoint: str
    api_version: str = DEFAULT_API_VERSION
    model: str | None = None
    agent: AgentConfig | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)
    region: str | None = None
    extra_query: dict[str, str] = field(default_factory=dict)
    open_timeout_s: float = 30.0
    ca_file: str | None = None  # PEM bundle of CAs to trust instead of the system store (private CAs)

    def __post_init__(self) -> None:
        legacy = self.mode == "agent_legacy"
        token_env = self.agent.access_token_env if legacy and self.agent else None
        if self.auth.legacy_agent != legacy or self.auth.agent_token_env != token_env:
            self.auth = dataclasses.replace(self.auth, legacy_agent=legacy, agent_token_env=token_env)

    @property
    def mode(self) -> Mode:
        if self.agent is None:
            return "model"
        return "agent_legacy" if self.agent.legacy else "agent"

    @property
    def host(self) -> str:
        return urlparse(self.endpoint).hostname or ""

    def validate(self) -> list[str]:
        """Problems that make the target unusable, each ``target.<field>: message``."""
        out: list[str] = []
        p = urlparse(self.endpoint)
        if not self.endpoint:
            out.append("target.endpoint: required (e.g. https://<resource>.services.ai.azure.com)")
        elif p.scheme not in SCHEMES:
            out.append(f"target.endpoint: scheme must be https, wss, http or ws, got {p.scheme or 'none'!r}")
        elif not p.hostname:
            out.append(f"target.endpoint: no host in {display_url(self.endpoint)!r}")
        elif p.username or p.password:
            out.append("target.endpoint: no credentials in the URL (user:password@host); use target.auth with an "
                       "environment variable")
        elif p.path.rstrip("/").endswith(REALTIME_PATH):
            out.append(f"target.endpoint: give the resource endpoint without {REALTIME_PATH} "
                       f"(it is appended, the path would be doubled)")
        if not self.api_version:
            out.append("target.api_version: required (e.g. " + DEFAULT_API_VERSION + ")")
        a = self.agent
        if a is None and not self.model:
            out.append("target.model: required in model mode (or give target.agent for agent mode)")
        if a is not None:
            if self.model:
                out.append("target.model: give either model or agent, not both (an agent brings its own model)")
            if a.name and a.agent_id:
                out.append("target.agent: give either name (Foundry agent) or agent_id (classic agent), not both")
            elif not a.name and not a.agent_id:
                out.append("target.agent.name: required in agent mode (or agent_id for a classic agent)")
            if not a.project_name:
                out.append("target.agent.project_name: required in agent mode")
            if self.mode == "agent_legacy":
                if not a.access_token_env and self.auth.kind != "entra":
                    out.append("target.agent.access_token_env: required for a classic agent (agent_id) unless "
                               "auth.kind is entra: name the environment variable holding the agent access token")
                for f in ("version", "conversation_id", "authentication_identity_client_id",
                          "foundry_resource_override"):
                    if getattr(a, f):
                        out.append(f"target.agent.{f}: only for Foundry agents (agent.name), not classic agent_id")
        if self.auth.kind not in AUTH_KINDS:
            out.append(f"target.auth.kind: must be one of {', '.join(AUTH_KINDS)}, got {self.auth.kind!r}")
        if self.auth.kind == "api_key" and not self.auth.api_key_env:
            out.append("target.auth.api_key_env: name the environment variable that holds the key")
        if self.auth.kind == "token" and not self.auth.token_env:
            out.append("target.auth.token_env: name the environment variable that holds the token")
        if self.auth.kind == "entra" and not self.auth.scope:
            out.append(f"target.auth.scope: required for Entra ID (normally {DEFAULT_SCOPE})")
        if not self.open_timeout_s or self.open_timeout_s <= 0:
            out.append("target.open_timeout_s: must be > 0")
        if self.ca_file is not None:
            from ..tlsconf import check_ca_file

            if p.scheme not in ("wss", "https"):
                out.append("target.ca_file: only for wss:// or https:// endpoints")
            problem = check_ca_file(self.ca_file)
            if problem:
                out.append(f"target.ca_file: {problem}")
        return out

    def warnings(self) -> list[str]:
        """Legal but probably unintended settings, each ``target.<field>: message``."""
        out: list[str] = []
        p = urlparse(self.endpoint)
        local = is_loopback(p.hostname or "")
        if p.scheme in ("ws", "http") and p.hostname and not local:
            out.append(f"target.endpoint: unencrypted {p.scheme}:// to non-loopback host {p.hostname!r}: "
                       f"credentials and audio travel in clear text; use https:// or wss://")
        if self.auth.kind == "none" and p.hostname and not local:
            out.append("target.auth.kind: 'none' against a real host will be refused (HTTP 401); use entra or api_key")
        problem = api_version_problem(self.api_version) if self.api_version else None
        if problem:
            out.append(f"target.api_version: {problem[0]}; the service answers 400 if it does not exist")
        if self.mode != "model" and self.auth.kind == "api_key":
            out.append("target.auth.kind: Learn says key-based authentication isn't supported in agent mode; "
                       "use entra")
        if self.mode == "agent_legacy":
            out.append("target.agent.agent_id: classic (v1) agent mode is superseded; prefer agent.name + "
                       "project_name (Foundry Agent Service)")
            if self.agent and self.agent.access_token_env:
                out.append(f"target.agent.access_token_env: a token from {self.agent.access_token_env} cannot be "
                           f"refreshed (Entra tokens last about an hour); for long runs leave it out and use "
                           f"auth.kind entra")
        if self.auth.kind == "entra" and self.auth.scope not in (DEFAULT_SCOPE, LEGACY_SCOPE):
            out.append(f"target.auth.scope: {self.auth.scope!r} is unusual; Voice Live accepts {DEFAULT_SCOPE} "
                       f"(or the legacy {LEGACY_SCOPE})")
        if self.auth.in_query and self.auth.kind in ("api_key", "token", "entra"):
            out.append("target.auth.in_query: the credential travels in the URL, where proxies may log it; "
                       "headers are safer")
        reserved = {"api-version", "model", *_AGENT_PARAMS}
        for key in self.extra_query:
            if key in reserved:
                out.append(f"target.extra_query.{key}: overrides the value voiceload derives from the target")
            elif is_secret_param(key):
                out.append(f"target.extra_query.{key}: looks like a secret; scenario files are not the place for "
                           f"secrets (use auth with an environment variable)")
        return out


def api_version_problem(version: str) -> tuple[str, bool] | None:
    """None for a known api-version; else (message, well_formed). Unknown but date-shaped versions
    (``YYYY-MM-DD[-preview]``) are only warned about: a newer service version must never be blocked."""
    if version in API_VERSIONS:
        return None
    shaped = bool(_VERSION_SHAPE.match(version or ""))
    what = "is not a version voiceload knows" if shaped else "is not an api-version (expected YYYY-MM-DD[-preview])"
    return f"{version!r} {what} ({', '.join(API_VERSIONS)})", shaped


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_secret_param(name: str) -> bool:
    n = name.lower()
    return n in _SECRET_PARAMS or any(part in n for part in _SECRET_PARTS)


def build_url(target: Target, *, secrets: Mapping[str, str] | None = None) -> str:
    """The WebSocket URL, exactly as the SDK's ``_prepare_url`` builds it (minus ``x-ms-client-sdk``).

    Order: api-version, model, agent parameters (SDK order), extra_query (overrides in place,
    appends new), credentials sent as query parameters, then parameters already in the endpoint
    URL if not yet set. Classic agents put ``agent-id``, ``agent-project-name``,
    ``agent-access-token`` where Learn's migration guide passes them: the SDK's ``query=`` dict,
    in that order, so they precede extra_query. ``secrets`` maps query names to values (from
    auth.CredentialProvider.query_secrets()); ``agent-access-token`` is used only by classic agents.
    """
    secrets = dict(secrets or {})
    parsed = urlparse(target.endpoint)
    # Same expression as the SDK: https -> wss, any other http* -> ws, everything else kept.
    scheme = "wss" if parsed.scheme == "https" else ("ws" if parsed.scheme.startswith("http") else parsed.scheme)
    params: dict[str, Any] = {"api-version": target.api_version}
    if target.model is not None:
        params["model"] = target.model
    agent = target.agent
    mode = target.mode
    if agent is not None and (not agent.project_name or not (agent.name or agent.agent_id)):
        raise ValueError("Both an agent name (or classic agent_id) and project_name are required in agent mode")
    if agent is not None and mode == "agent":
        params["agent-name"] = agent.name
        params["agent-project-name"] = agent.project_name
        for key, value in (("agent-version", agent.version), ("conversation-id", agent.conversation_id),
                           ("agent-authentication-identity-client-id", agent.authentication_identity_client_id),
                           ("foundry-resource-override", agent.foundry_resource_override)):
            if value:  # the SDK tests truthiness: empty strings are left out
                params[key] = value
    token = secrets.pop(LEGACY_TOKEN_PARAM, None)
    if agent is not None and mode == "agent_legacy":
        if not token:
            raise ValueError(f"{LEGACY_TOKEN_PARAM}: no value for the classic agent's access token "
                             f"(auth.CredentialProvider.query_secrets() supplies it)")
        params.update({"agent-id": agent.agent_id, "agent-project-name": agent.project_name,
                       LEGACY_TOKEN_PARAM: token})
    params.update(target.extra_query)
    params.update(secrets)
    params.pop(SDK_TELEMETRY_PARAM, None)
    for key, values in parse_qs(parsed.query).items():  # parse_qs drops blank values, as in the SDK
        if key not in params and key != SDK_TELEMETRY_PARAM:
            params[key] = values[0] if values else ""
    path = parsed.path.rstrip("/") + REALTIME_PATH
    return urlunparse((scheme, parsed.netloc, path, parsed.params, urlencode(params), parsed.fragment))


def display_url(url: str) -> str:
    """``url`` with secret query values (and any password in the authority) replaced by ``***``."""
    p = urlparse(url)
    netloc = p.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"***@{hostport}"
    parts = []
    for part in p.query.split("&") if p.query else []:
        key, eq, _value = part.partition("=")
        parts.append(f"{key}=***" if eq and is_secret_param(unquote_plus(key)) else part)
    return urlunparse((p.scheme, netloc, p.path, p.params, "&".join(parts), p.fragment))


def parse_target_url(url: str, *, name: str | None = None, model: str | None = None,
                     auth: AuthConfig | None = None, env: Mapping[str, str] | None = None) -> Target:
    """A Target from the CLI's ``--target URL``.

    Accepts a full ``wss://host/voice-live/realtime?api-version=..&model=..`` URL or a bare
    resource endpoint such as ``https://<resource>.services.ai.azure.com`` (then api-version and
    model take their defaults). A loopback host (``ws://127.0.0.1:8765``) is a local simulator:
    auth none. Otherwise auth is chosen from which variables are set in ``env`` (default
    os.environ): AZURE_VOICELIVE_API_KEY -> api_key (model mode), AZURE_VOICELIVE_TOKEN ->
    token, else entra. Secrets in the URL itself are refused: they would end up in shell history
    and process lists.
    """
    env = os.environ if env is None else env
    p = urlparse(url.strip())
    if p.scheme not in SCHEMES:
        raise ValueError(f"--target {display_url(url)}: scheme must be wss://, https://, ws:// or http://")
    if not p.hostname:
        raise ValueError(f"--target {display_url(url)}: no host")
    query = parse_qsl(p.query, keep_blank_values=True)
    for key, _ in query:
        if is_secret_param(key):
            raise ValueError(f"--target: don't put {key!r} in the URL; put the secret in an environment variable "
                             f"({API_KEY_ENV}, {TOKEN_ENV} or {AGENT_TOKEN_ENV}) and use auth settings")
    q = dict(query)
    path = p.path.rstrip("/")
    if path.endswith(REALTIME_PATH):
        path = path[: -len(REALTIME_PATH)]
    endpoint = urlunparse((p.scheme, p.netloc, path, "", "", ""))
    agent = None
    if "agent-id" in q:
        agent = AgentConfig(agent_id=q["agent-id"], project_name=q.get("agent-project-name"),
                            access_token_env=AGENT_TOKEN_ENV if env.get(AGENT_TOKEN_ENV) else None)
    elif "agent-name" in q or "agent-project-name" in q:
        agent = AgentConfig(name=q.get("agent-name"), project_name=q.get("agent-project-name"),
                            version=q.get("agent-version") or None, conversation_id=q.get("conversation-id") or None,
                            authentication_identity_client_id=q.get("agent-authentication-identity-client-id") or None,
                            foundry_resource_override=q.get("foundry-resource-override") or None)
    used = {"api-version", "model", SDK_TELEMETRY_PARAM, *(_AGENT_PARAMS if agent else ())}
    extra = {k: v for k, v in query if k not in used}
    host = p.hostname
    local = is_loopback(host)
    if model is None:
        model = q.get("model") or (None if agent else DEFAULT_MODEL)
    if auth is None:
        if local:
            auth = AuthConfig(kind="none")
        elif env.get(API_KEY_ENV) and agent is None:
            auth = AuthConfig(kind="api_key")
        elif env.get(TOKEN_ENV):
            auth = AuthConfig(kind="token")
        else:
            auth = AuthConfig(kind="entra")
    region = host.split(".", 1)[0] if host.endswith(".api.cognitive.microsoft.com") else None
    return Target(name=name or ("local" if local else region or host.split(".", 1)[0]), endpoint=endpoint,
                  api_version=q.get("api-version") or DEFAULT_API_VERSION, model=model, agent=agent, auth=auth,
                  region=region, extra_query=extra)
