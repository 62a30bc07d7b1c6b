"""``target:`` / ``targets:`` of a scenario: the embedded simulator or real Voice Live endpoints."""

from __future__ import annotations

import datetime
from typing import Any

from . import schema as s
from .protocol import endpoint as ep
from .quota import parse_limits
from .scenario_types import TargetSpec


def parse_targets(data: dict[str, Any], p: s.Problems) -> list[TargetSpec]:
    if "target" in data and "targets" in data:
        p.add("targets", "give either target or targets, not both")
        return []
    if "targets" in data:
        raw = s.get_list(data, "targets", "", p)
        if not raw and "targets" not in [k for k, _ in p.items]:
            p.add("targets", "at least one target is required")
        specs = [parse_target(t, f"targets[{i}]", p) for i, t in enumerate(raw)]
        names = [t.name for t in specs]
        for i, n in enumerate(names):
            if names.index(n) != i:
                p.add(f"targets[{i}].name", f"duplicate target name {n!r}: names tag every record")
        return specs
    return [parse_target(data.get("target", "embedded"), "target", p)]


def parse_target(raw: Any, path: str, p: s.Problems) -> TargetSpec:
    if raw == "embedded" or raw is None:
        return TargetSpec(name="embedded")
    if not isinstance(raw, dict):
        p.add(path, f"expected 'embedded' or a mapping with endpoint/model/agent/auth, got {raw!r}")
        return TargetSpec(name="embedded")
    if raw.get("embedded") or raw.get("type") == "embedded" or raw.get("endpoint") == "embedded":
        # endpoint: ${EASTUS2_ENDPOINT:-embedded} runs offline on the simulator, on Azure when the variable is set
        s.check_keys(raw, ("name", "embedded", "type", "profile", "endpoint", "api_version", "model", "agent",
                           "auth", "region", "extra_query", "open_timeout_s", "limits", "tls"), path, p)
        tls = raw.get("tls", False)
        if not isinstance(tls, bool):
            p.add(s.join(path, "tls"), f"expected true or false, got {tls!r}")
            tls = False
        return TargetSpec(name=s.get_str(raw, "name", path, p, "embedded") or "embedded", embedded=True,
                          profile=s.get_str(raw, "profile", path, p, "realistic") or "realistic",
                          limits=parse_limits(raw.get("limits"), s.join(path, "limits"), p), tls=tls)
    s.check_keys(raw, ("name", "endpoint", "api_version", "model", "agent", "auth", "region", "extra_query",
                       "open_timeout_s", "type", "profile", "limits", "ca_file"), path, p)
    if isinstance(raw.get("api_version"), datetime.date):  # api_version: 2026-07-15 unquoted is a YAML date
        raw = {**raw, "api_version": raw["api_version"].isoformat()}
    endpoint = s.get_str(raw, "endpoint", path, p)
    if not endpoint:
        p.add(s.join(path, "endpoint"), "required for a non-embedded target (or write target: embedded)")
        endpoint = ""
    agent = None
    if "agent" in raw:
        a = s.get_dict(raw, "agent", path, p)
        apath = s.join(path, "agent")
        s.check_keys(a, ("name", "project_name", "version", "conversation_id", "authentication_identity_client_id",
                         "foundry_resource_override", "agent_id", "access_token_env"), apath, p)
        agent = ep.AgentConfig(**{k: (str(v) if v is not None else None) for k, v in a.items()
                                  if k in ep.AgentConfig.__dataclass_fields__})
    auth_raw = s.get_dict(raw, "auth", path, p)
    s.check_keys(auth_raw, ("kind", "api_key_env", "token_env", "scope", "tenant_id", "in_query"),
                 s.join(path, "auth"), p)
    kind = s.get_str(auth_raw, "kind", s.join(path, "auth"), p, "entra", choices=("none", "api_key", "entra", "token"))
    auth = ep.AuthConfig(**{**{k: v for k, v in auth_raw.items() if k in ep.AuthConfig.__dataclass_fields__},
                            "kind": kind or "entra"})
    extra = s.get_dict(raw, "extra_query", path, p)
    target = ep.Target(name=s.get_str(raw, "name", path, p) or s.get_str(raw, "region", path, p) or "target",
                       endpoint=endpoint,
                       api_version=s.get_str(raw, "api_version", path, p, ep.DEFAULT_API_VERSION)
                       or ep.DEFAULT_API_VERSION,
                       model=s.get_str(raw, "model", path, p), agent=agent, auth=auth,
                       region=s.get_str(raw, "region", path, p),
                       extra_query={str(k): str(v) for k, v in extra.items()},
                       open_timeout_s=s.get_float(raw, "open_timeout_s", path, p, 30.0, lo=0.1, hi=600) or 30.0,
                       ca_file=s.get_str(raw, "ca_file", path, p) or None)
    if endpoint:
        for problem in target.validate():
            p.add(path if ":" not in problem else s.join(path, problem.split(":", 1)[0].removeprefix("target.")),
                  problem.split(":", 1)[-1].strip())
    return TargetSpec(name=target.name, embedded=False, target=target,
                      limits=parse_limits(raw.get("limits"), s.join(path, "limits"), p))
