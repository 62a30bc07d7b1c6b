"""build_url must equal the official SDK's URL (minus its telemetry parameter) for the same inputs.

The SDK's ``connect()`` only builds a ``_VoiceLiveConnectionManager``; nothing connects until
``__aenter__``, so calling ``_prepare_url()`` on it is pure string work with no network.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

import pytest

from harness.protocol import endpoint as ep

pytest.importorskip("aiohttp")  # the SDK's aio module imports it
from azure.ai.voicelive.aio import connect  # noqa: E402
from azure.core.credentials import AzureKeyCredential  # noqa: E402

SERVICES = "https://my-res.services.ai.azure.com"


def sdk_url(endpoint: str, *, api_version: str | None = None, model: str | None = None,
            query: dict | None = None, **agent: str | None) -> str:
    kwargs: dict = {"credential": AzureKeyCredential("not-used-no-connect"), "endpoint": endpoint, "model": model,
                    "query": query}
    if api_version is not None:
        kwargs["api_version"] = api_version
    kwargs.update(agent)
    manager = connect(**kwargs)
    assert type(manager).__name__ == "_VoiceLiveConnectionManager"
    return manager._prepare_url()


def without_telemetry(url: str) -> str:
    p = urlparse(url)
    query = [(k, v) for k, v in parse_qsl(p.query, keep_blank_values=True) if k != ep.SDK_TELEMETRY_PARAM]
    return urlunparse((p.scheme, p.netloc, p.path, p.params, urlencode(query), p.fragment))


def parts(url: str) -> tuple:
    p = urlparse(url)
    return p.scheme, p.netloc, p.path, parse_qsl(p.query, keep_blank_values=True)


def agent_kwargs(a: ep.AgentConfig) -> dict:
    return {"agent_name": a.name, "project_name": a.project_name, "agent_version": a.version,
            "conversation_id": a.conversation_id,
            "authentication_identity_client_id": a.authentication_identity_client_id,
            "foundry_resource_override": a.foundry_resource_override}


A = ep.AgentConfig
CASES = [
    ("model-services", dict(endpoint=SERVICES, model="gpt-realtime")),
    ("model-trailing-slash", dict(endpoint=SERVICES + "/", model="gpt-realtime")),
    ("model-existing-query", dict(endpoint=SERVICES + "/?foo=bar&api-version=2020-01-01&model=zzz&empty=&x=1&x=2",
                                  model="gpt-4.1")),
    ("extra-query-overrides", dict(endpoint=SERVICES + "?a=from-endpoint", model="gpt-realtime",
                                   extra_query={"model": "gpt-4.1-mini", "api-version": "2025-10-01", "a": "mine",
                                                "profile": "byom-azure-openai-realtime"})),
    ("cognitiveservices-host", dict(endpoint="https://legacy-res.cognitiveservices.azure.com/", model="gpt-4.1")),
    ("regional-host", dict(endpoint="https://eastus2.api.cognitive.microsoft.com", model="gpt-realtime",
                           region="eastus2")),
    ("local-http", dict(endpoint="http://localhost:8765", model="gpt-realtime")),
    ("local-ws-kept", dict(endpoint="ws://127.0.0.1:9001/", model="gpt-realtime")),
    ("wss-kept", dict(endpoint="wss://my-res.services.ai.azure.com", model="gpt-realtime")),
    ("path-prefix", dict(endpoint="https://gw.example.com/voice/", model="gpt-realtime")),
    ("needs-encoding", dict(endpoint=SERVICES, model="my model/v1+x", extra_query={"note": "a b&c=d"})),
    ("custom-api-version", dict(endpoint=SERVICES, model="gpt-realtime", api_version="2025-10-01")),
    ("preview-api-version", dict(endpoint=SERVICES, model="phi4-mm-realtime", api_version="2026-01-01-preview")),
    ("agent-min", dict(endpoint=SERVICES, agent=A(name="support-bot", project_name="proj"))),
    ("agent-version", dict(endpoint=SERVICES, agent=A(name="support-bot", project_name="proj", version="3"))),
    ("agent-conversation", dict(endpoint=SERVICES, agent=A(name="bot", project_name="proj",
                                                           conversation_id="conv_123"))),
    ("agent-identity", dict(endpoint=SERVICES, agent=A(name="bot", project_name="proj",
                                                       authentication_identity_client_id="0000-1111"))),
    ("agent-override", dict(endpoint=SERVICES, agent=A(name="bot", project_name="proj",
                                                       foundry_resource_override="other-res"))),
    ("agent-all", dict(endpoint=SERVICES + "/", api_version="2026-04-10", extra_query={"x": "1"},
                       agent=A(name="bot", project_name="proj", version="2", conversation_id="c1",
                               authentication_identity_client_id="cid", foundry_resource_override="res2"))),
    ("agent-empty-optional", dict(endpoint=SERVICES, agent=A(name="bot", project_name="proj", version=""))),
]


@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_build_url_equals_sdk(case):
    target = ep.Target(name="t", **case)
    ours = ep.build_url(target)
    agent = agent_kwargs(target.agent) if target.agent else {}
    theirs = sdk_url(target.endpoint, api_version=case.get("api_version"), model=target.model,
                     query=target.extra_query, **agent)
    assert ep.SDK_TELEMETRY_PARAM in theirs  # we really compared against the 1.3 SDK behaviour
    assert parts(ours) == parts(without_telemetry(theirs))
    assert ours == without_telemetry(theirs)


def test_table_is_large_enough():
    assert len(CASES) >= 12


@pytest.mark.parametrize("extra", [{}, {"x": "1", "agent-project-name": "over"}])
def test_legacy_agent_matches_learn_classic_connect(extra):
    """Learn's migration guide passes the classic parameters through the SDK's query dict."""
    target = ep.Target(name="t", endpoint=SERVICES, extra_query=extra,
                       agent=A(agent_id="asst_abc", project_name="proj", access_token_env="AGENT_TOK"))
    assert target.mode == "agent_legacy"
    ours = ep.build_url(target, secrets={"agent-access-token": "tok.en/value+="})
    theirs = sdk_url(SERVICES, query={"agent-id": "asst_abc", "agent-project-name": "proj",
                                      "agent-access-token": "tok.en/value+=", **extra})
    assert ours == without_telemetry(theirs)
    keys = [k for k, _ in parts(ours)[3]]
    assert keys[:4] == ["api-version", "agent-id", "agent-project-name", "agent-access-token"]


def test_legacy_agent_needs_token_and_model_mode_ignores_it():
    legacy = ep.Target(name="t", endpoint=SERVICES, agent=A(agent_id="a", project_name="p", access_token_env="E"))
    with pytest.raises(ValueError, match="agent-access-token"):
        ep.build_url(legacy)
    model = ep.Target(name="t", endpoint=SERVICES, model="gpt-realtime")
    assert "agent-access-token" not in ep.build_url(model, secrets={"agent-access-token": "***"})


def test_credentials_in_query_follow_extra_query():
    t = ep.Target(name="t", endpoint=SERVICES + "?z=9", model="m", extra_query={"a": "1"},
                  auth=ep.AuthConfig(kind="api_key", in_query=True))
    keys = [k for k, _ in parts(ep.build_url(t, secrets={"api-key": "k" * 32}))[3]]
    assert keys == ["api-version", "model", "a", "api-key", "z"]


def test_telemetry_param_never_sent():
    t = ep.Target(name="t", endpoint=SERVICES + "?x-ms-client-sdk=theirs", model="m",
                  extra_query={"x-ms-client-sdk": "x"})
    assert "x-ms-client-sdk" not in ep.build_url(t)


def test_default_api_version_is_newest_ga_and_sdk_default():
    assert ep.DEFAULT_API_VERSION == ep.GA_API_VERSIONS[-1] == "2026-07-15"
    assert "preview" not in ep.DEFAULT_API_VERSION
    import inspect

    assert inspect.signature(connect).parameters["api_version"].default == ep.DEFAULT_API_VERSION


# --- modes, validate(), warnings() ---------------------------------------------------------------

def test_modes_and_auth_link():
    assert ep.Target(name="t", endpoint=SERVICES, model="m").mode == "model"
    assert ep.Target(name="t", endpoint=SERVICES, agent=A(name="a", project_name="p")).mode == "agent"
    legacy = ep.Target(name="t", endpoint=SERVICES, agent=A(agent_id="a", project_name="p", access_token_env="TOK"))
    assert legacy.mode == "agent_legacy"
    assert legacy.auth.legacy_agent and legacy.auth.agent_token_env == "TOK"
    assert ep.Target(name="t", endpoint=SERVICES, model="m").auth.kind == "entra"


@pytest.mark.parametrize("kwargs, expected", [
    (dict(endpoint=SERVICES), "target.model: required in model mode"),
    (dict(endpoint=SERVICES, model="m", agent=A(name="a", project_name="p")), "target.model: give either"),
    (dict(endpoint=SERVICES, agent=A(name="a")), "target.agent.project_name: required in agent mode"),
    (dict(endpoint=SERVICES, agent=A(project_name="p")), "target.agent.name: required in agent mode"),
    (dict(endpoint=SERVICES, agent=A(name="a", agent_id="b", project_name="p")), "target.agent: give either"),
    (dict(endpoint=SERVICES, agent=A(agent_id="a", project_name="p"), auth=ep.AuthConfig(kind="api_key")),
     "target.agent.access_token_env: required"),
    (dict(endpoint=SERVICES, agent=A(agent_id="a", project_name="p", access_token_env="E", version="2")),
     "target.agent.version: only for Foundry agents"),
    (dict(endpoint="ftp://host", model="m"), "target.endpoint: scheme must be"),
    (dict(endpoint="", model="m"), "target.endpoint: required"),
    (dict(endpoint="https://", model="m"), "target.endpoint: no host"),
    (dict(endpoint=SERVICES + "/voice-live/realtime", model="m"), "target.endpoint: give the resource endpoint"),
    (dict(endpoint=SERVICES, model="m", api_version=""), "target.api_version: required"),
    (dict(endpoint=SERVICES, model="m", auth=ep.AuthConfig(kind="basic")), "target.auth.kind: must be one of"),
    (dict(endpoint=SERVICES, model="m", auth=ep.AuthConfig(kind="api_key", api_key_env="")),
     "target.auth.api_key_env"),
    (dict(endpoint=SERVICES, model="m", open_timeout_s=0), "target.open_timeout_s"),
])
def test_validate_names_the_field(kwargs, expected):
    problems = ep.Target(name="t", **kwargs).validate()
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize("kwargs", [
    dict(endpoint=SERVICES, model="gpt-realtime"),
    dict(endpoint="ws://127.0.0.1:8765", model="gpt-realtime", auth=ep.AuthConfig(kind="none")),
    dict(endpoint=SERVICES, agent=A(name="a", project_name="p", version="1", conversation_id="c")),
    dict(endpoint=SERVICES, agent=A(agent_id="a", project_name="p")),  # classic + entra: token derived
    dict(endpoint=SERVICES, agent=A(agent_id="a", project_name="p", access_token_env="E"),
         auth=ep.AuthConfig(kind="api_key")),
])
def test_valid_targets_have_no_problems(kwargs):
    assert ep.Target(name="t", **kwargs).validate() == []


@pytest.mark.parametrize("kwargs, expected", [
    (dict(endpoint="ws://voice.example.com", model="m"), "target.endpoint: unencrypted ws://"),
    (dict(endpoint="http://10.1.2.3:8080", model="m"), "target.endpoint: unencrypted http://"),
    (dict(endpoint=SERVICES, model="m", api_version="2030-01-01"), "target.api_version: '2030-01-01' is not"),
    (dict(endpoint=SERVICES, agent=A(name="a", project_name="p"), auth=ep.AuthConfig(kind="api_key")),
     "target.auth.kind: Learn says key-based"),
    (dict(endpoint=SERVICES, model="m", auth=ep.AuthConfig(kind="none")), "target.auth.kind: 'none'"),
    (dict(endpoint=SERVICES, agent=A(agent_id="a", project_name="p", access_token_env="E")),
     "target.agent.access_token_env: a token from E cannot be refreshed"),
    (dict(endpoint=SERVICES, model="m", extra_query={"model": "x"}), "target.extra_query.model: overrides"),
    (dict(endpoint=SERVICES, model="m", extra_query={"api-key": "x"}), "target.extra_query.api-key: looks like"),
    (dict(endpoint=SERVICES, model="m", auth=ep.AuthConfig(scope="https://example.com/.default")),
     "target.auth.scope"),
])
def test_warnings(kwargs, expected):
    warnings = ep.Target(name="t", **kwargs).warnings()
    assert any(w.startswith(expected) for w in warnings), warnings
    assert ep.Target(name="t", **kwargs).validate() == []


@pytest.mark.parametrize("endpoint", ["ws://127.0.0.1:8765", "http://localhost:8765", "ws://[::1]:80",
                                      "wss://my-res.services.ai.azure.com"])
def test_no_cleartext_warning_for_loopback_or_tls(endpoint):
    auth = ep.AuthConfig(kind="none") if "services" not in endpoint else ep.AuthConfig()
    assert not [w for w in ep.Target(name="t", endpoint=endpoint, model="m", auth=auth).warnings()
                if "unencrypted" in w or "'none'" in w]


# --- display_url ---------------------------------------------------------------------------------

@pytest.mark.parametrize("url, hidden, kept", [
    ("wss://h/voice-live/realtime?api-version=1&agent-access-token=eyJabc.def.ghi&model=m",
     ["eyJabc"], ["api-version=1", "model=m", "agent-access-token=***"]),
    ("wss://h/x?api-key=0123456789abcdef&Authorization=Bearer%20tok", ["0123456789", "tok"],
     ["api-key=***", "Authorization=***"]),
    ("https://acct.blob.core.windows.net/c?sv=2021&sig=AbC%2Bdef&se=2030", ["AbC"], ["sig=***", "sv=2021"]),
    ("wss://h/x?my_token=a1&client-secret=s2&subscription-key=k3&x=4", ["a1", "s2", "k3"], ["x=4"]),
    ("wss://user:pa55word@h/x?model=m", ["pa55word"], ["user:***@h", "model=m"]),
])
def test_display_url_masks_secret_values(url, hidden, kept):
    shown = ep.display_url(url)
    for h in hidden:
        assert h not in shown
    for k in kept:
        assert k in shown


def test_display_url_of_built_url():
    t = ep.Target(name="t", endpoint=SERVICES, agent=A(agent_id="a", project_name="p", access_token_env="E"))
    shown = ep.display_url(ep.build_url(t, secrets={"agent-access-token": "eyJsecret.value.x"}))
    assert "eyJsecret" not in shown and "agent-access-token=***" in shown and "agent-id=a" in shown


# --- parse_target_url ----------------------------------------------------------------------------

def test_parse_full_url_round_trips():
    url = ("wss://my-res.services.ai.azure.com/voice-live/realtime?api-version=2025-10-01&model=gpt-4.1"
           "&profile=byom-azure-openai-realtime")
    t = ep.parse_target_url(url, env={})
    assert (t.endpoint, t.api_version, t.model, t.mode) == ("wss://my-res.services.ai.azure.com", "2025-10-01",
                                                            "gpt-4.1", "model")
    assert t.extra_query == {"profile": "byom-azure-openai-realtime"}
    assert t.auth.kind == "entra" and t.name == "my-res"
    assert ep.build_url(t) == url
    assert t.validate() == []


def test_parse_bare_endpoint_uses_defaults():
    t = ep.parse_target_url("https://my-res.services.ai.azure.com/", env={})
    assert (t.api_version, t.model, t.auth.kind) == (ep.DEFAULT_API_VERSION, ep.DEFAULT_MODEL, "entra")
    assert ep.build_url(t) == (f"wss://my-res.services.ai.azure.com/voice-live/realtime?"
                               f"api-version={ep.DEFAULT_API_VERSION}&model={ep.DEFAULT_MODEL}")


def test_parse_local_simulator_means_auth_none():
    t = ep.parse_target_url("ws://127.0.0.1:8765", env={ep.API_KEY_ENV: "k" * 32})
    assert (t.auth.kind, t.name, t.model) == ("none", "local", ep.DEFAULT_MODEL)
    assert t.warnings() == [] and t.validate() == []
    assert ep.build_url(t).startswith("ws://127.0.0.1:8765/voice-live/realtime?api-version=")


def test_parse_picks_auth_from_environment_names():
    url = "https://eastus2.api.cognitive.microsoft.com"
    t = ep.parse_target_url(url, env={ep.API_KEY_ENV: "x" * 32})
    assert t.auth.kind == "api_key" and t.region == "eastus2" and t.name == "eastus2"
    assert ep.parse_target_url(url, env={ep.TOKEN_ENV: "t" * 40}).auth.kind == "token"
    assert ep.parse_target_url(url, auth=ep.AuthConfig(kind="entra", tenant_id="tid"), env={}).auth.tenant_id == "tid"


def test_parse_agent_urls():
    t = ep.parse_target_url(SERVICES + "/voice-live/realtime?api-version=2026-04-10&agent-name=bot"
                                       "&agent-project-name=proj&agent-version=2&conversation-id=c1", env={})
    assert t.mode == "agent" and t.model is None
    assert (t.agent.name, t.agent.project_name, t.agent.version, t.agent.conversation_id) == ("bot", "proj", "2", "c1")
    assert t.extra_query == {} and t.validate() == []
    legacy = ep.parse_target_url(SERVICES + "?agent-id=asst_1&agent-project-name=proj",
                                 env={ep.AGENT_TOKEN_ENV: "tok" * 20})
    assert legacy.mode == "agent_legacy" and legacy.agent.access_token_env == ep.AGENT_TOKEN_ENV


@pytest.mark.parametrize("url, message", [
    ("ftp://host/x", "scheme"),
    ("wss:///voice-live/realtime", "no host"),
    (SERVICES + "?api-key=0123456789abcdef", "don't put 'api-key' in the URL"),
    (SERVICES + "?agent-id=a&agent-project-name=p&agent-access-token=eyJxyz", "agent-access-token"),
])
def test_parse_rejects_bad_urls_without_echoing_secrets(url, message):
    with pytest.raises(ValueError, match=message) as info:
        ep.parse_target_url(url, env={})
    assert "0123456789abcdef" not in str(info.value) and "eyJxyz" not in str(info.value)
