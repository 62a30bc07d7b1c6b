"""What a turn's tool calls looked like from the caller's side. Pure: no I/O, no clock.

A tool turn spans several responses: the one that calls (function_call or mcp_call output items),
possibly an interim filler, and the answer. ``timeline.py`` keeps them on one turn instead of
letting the later response supersede the earlier one; this module holds the per-call state and
decides when the tool round trip is still open (the turn is not over and, if it never closes,
ends as ``tool_timeout``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FUNCTION_ARGS_DONE = "response.function_call_arguments.done"
MCP_ARGS_DONE = "response.mcp_call_arguments.done"
MCP_IN_PROGRESS = "response.mcp_call.in_progress"
MCP_COMPLETED = "response.mcp_call.completed"
MCP_FAILED = "response.mcp_call.failed"
#: Tool events that carry response_id (routed like other response events).
RESPONSE_TOOL_EVENTS = frozenset({"response.function_call_arguments.delta", FUNCTION_ARGS_DONE,
                                  "response.mcp_call_arguments.delta", MCP_ARGS_DONE})
#: MCP call status events carry only item_id (routed through the output item they belong to).
ITEM_TOOL_EVENTS = frozenset({MCP_IN_PROGRESS, MCP_COMPLETED, MCP_FAILED})
CALL_ITEM_TYPES = ("function_call", "mcp_call")
MAX_TOOL_ROUNDS = 8  # a model that keeps calling tools forever must not keep a turn open forever


@dataclass
class ToolCall:
    """One call; instants are monotonic ns as stamped on arrival (or, for sends, just before)."""

    kind: str  # function (the caller executes it) | mcp (the service does)
    item_id: str
    response_id: str
    name: str = ""
    call_id: str = ""
    arguments: str = ""
    args_done_ns: int | None = None  # function_call_arguments.done / mcp_call_arguments.done arrived
    started_ns: int | None = None  # executor started / mcp_call.in_progress arrived
    result_ns: int | None = None  # function_call_output sent / mcp_call.completed|failed arrived
    exec_ms: float | None = None  # executor duration (function calls)
    ok: bool | None = None
    error: str = ""
    output: str = ""  # what the caller sent back (function calls)


@dataclass
class ToolState:
    calls: list[ToolCall] = field(default_factory=list)
    calling: list[str] = field(default_factory=list)  # response ids that issued calls
    answer_requested_ns: int | None = None  # last response.create sent after function outputs
    answer_response_id: str | None = None  # the first response created after the tool result was in
    answer_first_audio_ns: int | None = None  # its first audio delta
    cut: list[str] = field(default_factory=list)  # calling responses that ended cancelled/failed: not answered

    def call_for(self, event: dict[str, Any]) -> ToolCall | None:
        item, cid = event.get("item_id"), event.get("call_id")
        for c in reversed(self.calls):
            if (item and c.item_id == item) or (cid and c.call_id == cid):
                return c
        return None

    @property
    def first_call_ns(self) -> int | None:
        """The first call's arguments complete (or, for MCP, its start if that came first)."""
        marks = [t for c in self.calls for t in (c.args_done_ns, c.started_ns if c.kind == "mcp" else None)
                 if t is not None]
        return min(marks) if marks else None

    @property
    def result_ns(self) -> int | None:
        """When the last tool result was in: the answer was requested (function) or the MCP call ended."""
        marks = [c.result_ns for c in self.calls if c.kind == "mcp" and c.result_ns is not None]
        if self.answer_requested_ns is not None:
            marks.append(self.answer_requested_ns)
        return max(marks) if marks else None

    def unanswered(self) -> bool:
        return any(c.kind == "function" and c.result_ns is None and c.response_id not in self.cut for c in self.calls)

    def pending(self, response_id: str | None, response_done: bool) -> bool:
        """True while a round trip is open: a function call unanswered, the current response is one
        that called tools, the requested answer has not started, or the answer is still streaming.
        A calling response that was cancelled or failed closes its round (the turn ends with that status)."""
        if not self.calls:
            return False
        if len(self.calling) >= MAX_TOOL_ROUNDS and response_done:
            return False
        if self.unanswered():
            return True
        if response_id in self.calling:
            return response_id not in self.cut
        if self.answer_requested_ns is not None and self.answer_response_id is None:
            return True
        return not response_done

    def on_response_created(self, response_id: str | None, t: int) -> None:
        result = self.result_ns
        if result is not None and self.answer_response_id is None and t >= result and not self.unanswered():
            self.answer_response_id, self.answer_first_audio_ns = response_id, None

    def on_audio(self, response_id: Any, t: int) -> None:
        if self.answer_first_audio_ns is None and response_id is not None and response_id == self.answer_response_id:
            self.answer_first_audio_ns = t


def apply(state: ToolState, event: dict[str, Any], etype: str, t: int, response_id: str | None) -> None:
    """Update ``state`` from one routed tool-related server event."""
    if etype == "response.output_item.added":
        item = event.get("item")
        if isinstance(item, dict) and item.get("type") in CALL_ITEM_TYPES:
            kind = "function" if item["type"] == "function_call" else "mcp"
            rid = event.get("response_id") if isinstance(event.get("response_id"), str) else response_id or ""
            state.calls.append(ToolCall(kind=kind, item_id=str(item.get("id") or ""), response_id=rid,
                                        name=str(item.get("name") or ""), call_id=str(item.get("call_id") or "")))
            if rid not in state.calling:
                state.calling.append(rid)
        return
    call = state.call_for(event)
    if call is None:
        if etype not in (FUNCTION_ARGS_DONE, MCP_ARGS_DONE):
            return
        rid = event.get("response_id") if isinstance(event.get("response_id"), str) else response_id or ""
        call = ToolCall(kind="function" if etype == FUNCTION_ARGS_DONE else "mcp",
                        item_id=str(event.get("item_id") or ""), response_id=rid)
        state.calls.append(call)
        if rid not in state.calling:
            state.calling.append(rid)
    if etype in (FUNCTION_ARGS_DONE, MCP_ARGS_DONE):
        call.args_done_ns = call.args_done_ns or t
        if isinstance(event.get("arguments"), str):
            call.arguments = event["arguments"]
        if isinstance(event.get("name"), str) and event["name"]:
            call.name = event["name"]
        if isinstance(event.get("call_id"), str) and event["call_id"]:
            call.call_id = event["call_id"]
    elif etype == MCP_IN_PROGRESS:
        call.started_ns = call.started_ns or t
    elif etype in (MCP_COMPLETED, MCP_FAILED):
        call.result_ns = t
        call.ok = etype == MCP_COMPLETED
        if etype == MCP_FAILED:
            err = event.get("error")
            call.error = str(err.get("message") if isinstance(err, dict) else err or "mcp call failed")[:200]
