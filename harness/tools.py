"""Scenario ``tools:``: function definitions the caller declares, how it answers them, what it expects.

Pure data and validation (no I/O): the definitions go into ``session.update`` as Voice Live function
tools, each with an *executor* that stands in for the caller's backend (``mock``: a result and a
latency distribution; ``http``: the user's own endpoint). ``mcp`` entries are passed through to the
session: the service (or the simulator) calls those itself. The I/O side lives in client/tools.py.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
from dataclasses import dataclass, field
from typing import Any

from . import schema as s
from .dist import Dist

LATENCY_KINDS = ("fixed", "uniform", "lognormal", "never")
EXECUTOR_KINDS = ("mock", "http")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_Z95 = 1.6448536269514722  # standard normal quantile at 0.95


@dataclass(frozen=True)
class Latency:
    """Executor latency in ms: fixed, uniform(min, max), lognormal(p50, p95) or never (it never answers)."""

    kind: str = "fixed"
    ms: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0

    def dist(self) -> Dist:
        """The same latency as the simulator's profile distributions express it (one sampler for both)."""
        if self.kind == "uniform":
            return Dist("uniform", lo=self.min_ms, hi=self.max_ms)
        if self.kind == "lognormal":
            sigma = math.log(self.p95_ms / self.p50_ms) / _Z95 if self.p95_ms > self.p50_ms else 0.0
            return Dist("lognormal", median=self.p50_ms, sigma=sigma)
        return Dist("fixed", value=self.ms)

    def sample(self, rng: random.Random) -> float:
        return math.inf if self.kind == "never" else self.dist().sample(rng)


@dataclass(frozen=True)
class Executor:
    kind: str = "mock"
    # mock
    result: Any = None  # JSON value; strings may hold {arg} placeholders filled from the call's arguments
    latency: Latency = field(default_factory=Latency)
    error_rate: float = 0.0
    error: Any = None  # the output sent instead of the result when an error is drawn
    # http
    url: str = ""
    timeout_s: float = 10.0
    headers_env: tuple[tuple[str, str], ...] = ()  # (header, environment variable): values never stored


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    executor: Executor = field(default_factory=Executor)

    def session_tool(self) -> dict[str, Any]:
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": self.parameters}


@dataclass(frozen=True)
class ToolExpect:
    """``expect: {tool: NAME, args: {...}, match: exact|subset}``; ``tool: none`` expects no call.

    ``args`` values are compared exactly; ``{regex: PATTERN}`` as a value matches with re.fullmatch.
    """

    tool: str
    args: dict[str, Any] | None = None
    match: str = "subset"  # exact: the call's arguments have exactly these keys

    def matches(self, name: str, arguments: Any) -> bool:
        if name != self.tool:
            return False
        if self.args is None:
            return True
        if not isinstance(arguments, dict):
            return False
        if self.match == "exact" and set(arguments) != set(self.args):
            return False
        return all(k in arguments and _value_ok(want, arguments[k]) for k, want in self.args.items())


def _value_ok(want: Any, got: Any) -> bool:
    if isinstance(want, dict) and set(want) == {"regex"}:
        return re.fullmatch(str(want["regex"]), str(got)) is not None
    if isinstance(want, (str, int, float)) and not isinstance(want, bool) and isinstance(got, (str, int, float)):
        return str(want) == str(got)
    return bool(want == got)


def parse_arguments(text: Any) -> Any:
    """A call's ``arguments`` string as JSON (the raw string when it is not valid JSON)."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text


def render_result(template: Any, arguments: Any) -> Any:
    """Fill ``{name}`` placeholders in every string of ``template`` from the call's arguments."""
    args = arguments if isinstance(arguments, dict) else {}
    if isinstance(template, str):
        try:
            return string.Formatter().vformat(template, (), _Missing(args))
        except (ValueError, IndexError):
            return template
    if isinstance(template, dict):
        return {k: render_result(v, args) for k, v in template.items()}
    if isinstance(template, list):
        return [render_result(v, args) for v in template]
    return template


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


# -- validation ------------------------------------------------------------------------------------
def parse_tools(raw: list[Any], p: s.Problems, path: str = "tools") -> tuple[list[FunctionTool], list[dict[str, Any]]]:
    """Function tools with executors, and MCP server entries (passed through to the session)."""
    functions: list[FunctionTool] = []
    mcp: list[dict[str, Any]] = []
    for i, t in enumerate(raw):
        tpath = f"{path}[{i}]"
        if not isinstance(t, dict):
            p.add(tpath, f"expected a mapping with name, description, parameters and executor, got {t!r}")
            continue
        kind = s.get_str(t, "type", tpath, p, "function", choices=("function", "mcp")) or "function"
        if kind == "mcp":
            mcp.append(_mcp(t, tpath, p))
            continue
        s.check_keys(t, ("type", "name", "description", "parameters", "executor"), tpath, p)
        name = s.get_str(t, "name", tpath, p) or ""
        if not _NAME_RE.match(name):
            p.add(s.join(tpath, "name"), f"expected 1-64 letters, digits, '_' or '-', got {name!r}")
        params = t.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict) or params.get("type", "object") != "object" or not isinstance(
                params.get("properties", {}), dict):
            p.add(s.join(tpath, "parameters"), "expected a JSON schema object: {type: object, properties: {...}}")
            params = {"type": "object", "properties": {}}
        functions.append(FunctionTool(name=name, description=s.get_str(t, "description", tpath, p, "") or "",
                                      parameters=params, executor=_executor(t.get("executor"),
                                                                            s.join(tpath, "executor"), p)))
    names = [f.name for f in functions]
    for i, n in enumerate(names):
        if n and names.index(n) != i:
            p.add(f"{path}[{i}].name", f"duplicate tool name {n!r}")
    return functions, mcp


def _mcp(t: dict[str, Any], path: str, p: s.Problems) -> dict[str, Any]:
    s.check_keys(t, ("type", "server_label", "server_url", "allowed_tools", "require_approval",
                     "authorization_env"), path, p)
    label = s.get_str(t, "server_label", path, p) or ""
    if not label:
        p.add(s.join(path, "server_label"), "required for an mcp tool")
    url = s.get_str(t, "server_url", path, p) or ""
    if not url.startswith(("http://", "https://")):
        p.add(s.join(path, "server_url"), f"expected an http(s) URL, got {url!r}")
    out: dict[str, Any] = {"type": "mcp", "server_label": label, "server_url": url,
                           "require_approval": s.get_str(t, "require_approval", path, p, "never",
                                                         choices=("never", "always")) or "never"}
    allowed = t.get("allowed_tools")
    if allowed is not None:
        if not isinstance(allowed, list) or not all(isinstance(x, str) for x in allowed):
            p.add(s.join(path, "allowed_tools"), "expected a list of tool names")
        else:
            out["allowed_tools"] = list(allowed)
    env = s.get_str(t, "authorization_env", path, p)
    if env:
        out["authorization_env"] = env  # resolved at connect time, never written to records or logs
    return out


def _executor(raw: Any, path: str, p: s.Problems) -> Executor:
    if raw is None:
        return Executor(result={"ok": True})
    if not isinstance(raw, dict):
        p.add(path, f"expected a mapping with kind: mock or http, got {raw!r}")
        return Executor()
    kind = s.get_str(raw, "kind", path, p, "mock", choices=EXECUTOR_KINDS) or "mock"
    if kind == "http":
        s.check_keys(raw, ("kind", "url", "timeout", "headers_env"), path, p)
        url = s.get_str(raw, "url", path, p) or ""
        if not url.startswith(("http://", "https://")):
            p.add(s.join(path, "url"), f"expected an http(s) URL, got {url!r}")
        headers = s.get_dict(raw, "headers_env", path, p)
        pairs = []
        for h, var in headers.items():
            if not isinstance(var, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                p.add(s.join(s.join(path, "headers_env"), str(h)),
                      f"expected the name of an environment variable holding the value, got {var!r}")
            else:
                pairs.append((str(h), var))
        return Executor(kind="http", url=url, timeout_s=s.get_duration(raw, "timeout", path, p, 10.0, lo=0.01,
                                                                       hi=600) or 10.0,
                        headers_env=tuple(pairs))
    s.check_keys(raw, ("kind", "result", "latency", "error_rate", "error"), path, p)
    return Executor(kind="mock", result=raw.get("result", {"ok": True}),
                    latency=_latency(raw.get("latency", 0), s.join(path, "latency"), p),
                    error_rate=s.get_float(raw, "error_rate", path, p, 0.0, lo=0, hi=1) or 0.0,
                    error=raw.get("error", {"error": "tool failed"}))


def _latency(raw: Any, path: str, p: s.Problems) -> Latency:
    if raw == "never":
        return Latency(kind="never")
    if isinstance(raw, (int, float, str)) and not isinstance(raw, bool):
        try:
            return Latency(kind="fixed", ms=s.parse_duration(raw if isinstance(raw, str) else raw / 1000) * 1000)
        except ValueError as exc:
            p.add(path, str(exc))
            return Latency()
    if not isinstance(raw, dict):
        p.add(path, f"expected milliseconds, 'never' or a mapping with kind, got {raw!r}")
        return Latency()
    kind = s.get_str(raw, "kind", path, p, "fixed", choices=LATENCY_KINDS) or "fixed"
    allowed = {"fixed": ("kind", "ms"), "uniform": ("kind", "min_ms", "max_ms"),
               "lognormal": ("kind", "p50_ms", "p95_ms"), "never": ("kind",)}[kind]
    s.check_keys(raw, allowed, path, p)
    val = {k: s.get_float(raw, k, path, p, None, lo=0, hi=3_600_000) for k in allowed[1:]}
    for k, v in val.items():
        if v is None:
            p.add(s.join(path, k), f"required for latency kind {kind}")
    if kind == "uniform" and None not in val.values() and val["max_ms"] < val["min_ms"]:
        p.add(s.join(path, "max_ms"), f"must be ≥ min_ms ({val['min_ms']})")
    if kind == "lognormal" and None not in val.values():
        if val["p50_ms"] <= 0:
            p.add(s.join(path, "p50_ms"), "must be > 0")
        elif val["p95_ms"] < val["p50_ms"]:
            p.add(s.join(path, "p95_ms"), f"must be ≥ p50_ms ({val['p50_ms']})")
    return Latency(kind=kind, **{k: v or 0.0 for k, v in val.items()})


def parse_expect(e: dict[str, Any], path: str, p: s.Problems, tool_names: list[str] | None) -> ToolExpect | None:
    """The tool part of a turn's ``expect`` (None when the turn expects nothing about tools)."""
    if "tool" not in e:
        if "args" in e:
            p.add(s.join(path, "args"), "needs 'tool' (the function the agent should call)")
        return None
    name = s.get_str(e, "tool", path, p) or ""
    args = e.get("args")
    if args is not None and not isinstance(args, dict):
        p.add(s.join(path, "args"), "expected a mapping of argument name to value (or {regex: PATTERN})")
        args = None
    for k, v in (args or {}).items():
        if isinstance(v, dict):
            if set(v) != {"regex"}:
                p.add(s.join(s.join(path, "args"), str(k)), "a mapping value must be {regex: PATTERN}")
                continue
            try:
                re.compile(str(v["regex"]))
            except re.error as exc:
                p.add(s.join(s.join(path, "args"), str(k)), f"invalid regex: {exc}")
    if name != "none" and tool_names is not None and name not in tool_names:
        p.add(s.join(path, "tool"), f"unknown tool {name!r} (tools: {', '.join(tool_names) or 'none defined'})")
    return ToolExpect(tool=name, args=args, match=s.get_str(e, "args_match", path, p, "subset",
                                                            choices=("subset", "exact")) or "subset")
