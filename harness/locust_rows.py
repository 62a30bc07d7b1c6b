"""Which Locust statistics rows a record fires: few, low-cardinality request events per turn/session.

TURN = first audio (failed when the turn did not complete), VAD, TRANSCRIPT; TOOL per called tool;
CONNECT per session; THROTTLED when a quota, not the agent, refused or cut the work; QUOTA for the
wait for connection budget. Locust's tables are for watching a run; the report and the verdict come from the records.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from .client.session import BUDGET_ABORT
from .records import SessionRecord, TurnRecord

Fire = Callable[..., None]  # environment.events.request.fire


class TurnFailed(Exception):
    """A turn that did not complete; the message is the reason from the closed set."""


class ToolFailed(Exception):
    """A tool call that failed (the executor's or MCP server's error) or never got a result (tool_timeout)."""


class SessionFailed(Exception):
    """A session that could not start (rejected handshake, connect error) or ended badly."""


def _suffix(scenario: Any, rec: Any) -> str:
    return f"@{rec.target}" if len(scenario.targets) > 1 else ""


def turn_rows(fire: Fire, scenario: Any, rec: TurnRecord) -> None:
    name, suffix = scenario.name, _suffix(scenario, rec)
    elapsed = rec.first_audio_ms
    if elapsed is None:
        elapsed = max((v for v in rec.marks.values()), default=0.0)
    if rec.throttle:  # the quota's doing, not the agent's: its own row, never a TURN failure
        fire(request_type="THROTTLED", name=f"{name}:{rec.throttle}{suffix}", response_time=max(0.0, elapsed),
             response_length=0, exception=None, context={"reason": rec.reason})
    else:
        fire(request_type="TURN", name=f"{name}:turn{suffix}", response_time=max(0.0, elapsed),
             response_length=rec.audio_bytes, exception=None if rec.complete else TurnFailed(rec.reason),
             context={"reason": rec.reason})
    if rec.vad_ms is not None:
        fire(request_type="VAD", name=f"{name}:vad{suffix}", response_time=max(0.0, rec.vad_ms),
             response_length=0, exception=None)
    if rec.first_transcript_ms is not None:
        fire(request_type="TRANSCRIPT", name=f"{name}:transcript{suffix}",
             response_time=max(0.0, rec.first_transcript_ms), response_length=0, exception=None)
    tool_rows(fire, scenario, rec)


def tool_rows(fire: Fire, scenario: Any, rec: TurnRecord) -> None:
    """One TOOL row per call, named after the tool: its response time is the tool's own execution time.

    That is what a row named after a function should say — how long *that tool* took, as an HTTP row
    says how long that endpoint took — and it exists for both kinds: the caller's executor run
    (function) and the service's call (MCP: arguments done → completed/failed). How soon the agent
    decided to call (first_tool_call_ms) is a property of the turn, not of one function; the report
    and thresholds have it. A call with no result counts as a failure without a response time (Locust
    counts it, its percentiles do not): ``tool_timeout`` when the round trip never closed, else the
    turn's reason.
    """
    suffix = _suffix(scenario, rec)
    for call in rec.tool_calls:
        ms = tool_time_ms(call)
        if call.get("ok") is False:
            exc: Exception | None = ToolFailed(_tool_error(call))
        elif ms is None:
            exc = ToolFailed("tool_timeout" if rec.reason == "tool_timeout" else f"no result: {rec.reason}")
        else:
            exc = None
        fire(request_type="TOOL", name=f"{scenario.name}:{call.get('name') or '?'}{suffix}",
             response_time=None if ms is None else max(0.0, ms), response_length=0, exception=exc)


def tool_time_ms(call: dict[str, Any]) -> float | None:
    """The call's execution time: the executor's run (function), or arguments done → result (MCP)."""
    if call.get("exec_ms") is not None:
        return float(call["exec_ms"])
    if call.get("kind") == "mcp" and call.get("result_ms") is not None and call.get("args_done_ms") is not None:
        return float(call["result_ms"]) - float(call["args_done_ms"])
    return None


def _tool_error(call: dict[str, Any]) -> str:
    """A short, low-cardinality failure message: the payload's ``error`` field when it has one."""
    text = call.get("error") or "failed"
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("error"):
        text = str(payload["error"])
    return f"tool error: {text}"[:120]


def session_rows(fire: Fire, scenario: Any, rec: SessionRecord) -> None:
    name = scenario.name
    if rec.outcome == "rejected" and rec.http_status == 429 and rec.throttled:
        # refused by the resource's quota or capacity: its own row, not a failure of the agent
        fire(request_type="THROTTLED", name=f"{name}:connect {rec.throttled}", response_time=rec.backoff_ms,
             response_length=0, exception=None)
    elif not (rec.outcome == "aborted" and rec.error == BUDGET_ABORT):  # still waiting for budget at stop
        exc = None if rec.outcome == "ok" else SessionFailed(
            f"{rec.outcome}" + (f" HTTP {rec.http_status}" if rec.http_status else ""))
        fire(request_type="CONNECT", name=f"{name}:connect", response_time=rec.connect_ms or 0.0,
             response_length=0, exception=exc)


def quota_row(fire: Fire, scenario: Any, waited_s: float) -> None:
    """A slot of the resource's connection budget; the wait shows as a QUOTA row, not a failure."""
    fire(request_type="QUOTA", name=f"{scenario.name}:wait for connection budget", response_time=waited_s * 1000,
         response_length=0, exception=None)
