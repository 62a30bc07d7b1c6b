"""The calling response: a response whose output is tool calls instead of speech, as events.

``tools.py`` decides that a turn calls tools and what happens around the calls (rounds, outputs,
filler, the answer); this emits the response itself: ``response.created``, per call
``output_item.added`` and ``conversation.item.created``, the argument deltas and ``.done``, then for
function calls ``output_item.done`` and ``response.done``, for MCP / agent actions
``mcp_call.in_progress`` … ``mcp_call.completed`` after the call's latency. Cancel and disconnect
end it from any state with a well-formed ``response.done`` (or none, for a vanished caller).
"""

from __future__ import annotations

import json
import types
from typing import TYPE_CHECKING, Any

from ..protocol import events as ev
from .actions import NS_PER_MS, Action, Record, Send, Timer
from .cascade import response_gate
from .truth import TurnTruth

if TYPE_CHECKING:
    from .tools import Intent, SimTools


class CallingResponse:
    """A response whose output is tool calls (function_call or mcp_call items) instead of speech."""

    audio = False

    def __init__(self, tools: SimTools, intent: Intent, calls: list[tuple[str, dict[str, Any]]],
                 kinds: list[tuple[str, str]], truth: TurnTruth, created_at: int, calls_at: int, latency_ms: float):
        self.tools, self.intent, self.truth = tools, intent, truth
        self.kind = kinds[0][0]
        self.rid = ev.new_id("resp")
        self.ctx = types.SimpleNamespace(response_id=self.rid, item_id=None)
        self.calls_at, self.latency_ms = calls_at, latency_ms
        self.state = "pending"
        self.blocked = False
        self.items: list[dict[str, Any]] = []
        for (name, args), (kind, label) in zip(calls, kinds):
            item: dict[str, Any] = {"id": ev.new_id("item"), "object": "realtime.item", "status": "in_progress",
                                    "name": name, "arguments": ""}
            if kind == "function":
                item.update(type="function_call", call_id=ev.new_id("call"))
            else:
                item.update(type="mcp_call", server_label=label, output=None)
            item["_args"] = json.dumps(args)
            self.items.append(item)
        truth.response_id, truth.tool_kind = self.rid, self.kind
        truth.tool_calls = [{"name": i["name"], "call_id": i.get("call_id"), "item_id": i["id"],
                             "arguments": json.loads(i["_args"])} for i in self.items]
        truth.tool_latency_ms = latency_ms if self.kind != "function" else None

    @property
    def active(self) -> bool:
        return self.state in ("pending", "calling")

    def _public(self, item: dict[str, Any], **over: Any) -> dict[str, Any]:
        return {**{k: v for k, v in item.items() if k != "_args"}, **over}

    def _response(self, status: str, details: dict[str, Any] | None = None, output: list[Any] | None = None) -> dict:
        sess = self.tools.sess
        return ev.response_object(self.rid, status=status, status_details=details, output=output or [],
                                  conversation_id=sess.conversation_id, modalities=list(sess.config["modalities"]),
                                  voice=sess.config["voice"], output_audio_format=sess.config["output_audio_format"])

    def on_created(self, now_ns: int) -> list[Action]:
        if self.state != "pending":
            return []
        sess = self.tools.sess
        held = response_gate(sess.user_item if sess.cascaded else None)(now_ns)  # cascaded: the user item first
        if held is None:
            self.blocked = True
            return []
        self.state = "calling"
        return held + [Send(ev.server_event(ev.RESPONSE_CREATED, response=self._response("in_progress")), self.truth,
                            "response_created"), Timer(max(now_ns, self.calls_at), self.on_calls)]

    def release(self, now_ns: int) -> list[Action]:
        if self.blocked and self.state == "pending":
            self.blocked = False
            return self.on_created(now_ns)
        return []

    def on_calls(self, now_ns: int) -> list[Action]:
        if self.state != "calling":
            return []
        sess, out = self.tools.sess, []
        n_deltas = max(1, sess.profile.tools.argument_deltas)
        for k, item in enumerate(self.items):
            prev = sess.conv.add(item["id"], item["type"])
            out.append(Send(ev.server_event(ev.OUTPUT_ITEM_ADDED, response_id=self.rid, output_index=k,
                                            item=self._public(item))))
            out.append(Send(ev.server_event(ev.ITEM_CREATED, previous_item_id=prev, item=self._public(item))))
            args, fn = item["_args"], item["type"] == "function_call"
            ids = {"response_id": self.rid, "item_id": item["id"], "output_index": k}
            if fn:
                ids["call_id"] = item["call_id"]
            prefix = "response.function_call_arguments" if fn else "response.mcp_call_arguments"
            for j in range(n_deltas):
                piece = args[len(args) * j // n_deltas: len(args) * (j + 1) // n_deltas]
                out.append(Send(ev.server_event(f"{prefix}.delta", **ids, delta=piece)))
            done = ev.server_event(f"{prefix}.done", **ids, arguments=args, **({"name": item["name"]} if fn else {}))
            out.append(Send(done, self.truth, "tool_args_done_sent"))
            if fn:
                out.append(Send(ev.server_event(ev.OUTPUT_ITEM_DONE, response_id=self.rid, output_index=k,
                                                item=self._public(item, status="completed", arguments=args))))
            else:
                out.append(Send(ev.server_event("response.mcp_call.in_progress", item_id=item["id"], output_index=k)))
        if self.kind == "function":
            return out + self._finish("completed", now_ns)
        return out + [Timer(now_ns + int(self.latency_ms * NS_PER_MS), self.on_mcp_done)]

    def on_mcp_done(self, now_ns: int) -> list[Action]:
        if self.state != "calling":
            return []
        out: list[Action] = []
        for k, item in enumerate(self.items):
            out.append(Send(ev.server_event("response.mcp_call.completed", item_id=item["id"], output_index=k),
                            self.truth, "tool_result_sent"))
            result = json.dumps({"ok": True, "tool": item["name"]})
            out.append(Send(ev.server_event(ev.OUTPUT_ITEM_DONE, response_id=self.rid, output_index=k,
                                            item=self._public(item, status="completed", arguments=item["_args"],
                                                              output=result))))
        return out + self._finish("completed", now_ns)

    def _finish(self, status: str, now_ns: int, details: dict[str, Any] | None = None) -> list[Action]:
        self.state = "done"
        output = [self._public(i, status="completed" if status == "completed" else "incomplete", arguments=i["_args"])
                  for i in self.items]
        self.truth.status, self.truth.reason = status, (details or {}).get("reason")
        out: list[Action] = [Send(ev.server_event(ev.RESPONSE_DONE, response=self._response(status, details, output)),
                                  self.truth, "done_sent"), Record(self.truth)]
        out += self.tools.sess._on_end(self, now_ns)  # type: ignore[arg-type]
        return out + self.tools.on_calling_done(self, now_ns)

    def cancel(self, reason: str, now_ns: int) -> list[Action]:
        if self.state == "done":
            return []
        out: list[Action] = []
        if self.state == "pending":
            out.append(Send(ev.server_event(ev.RESPONSE_CREATED, response=self._response("in_progress")), self.truth,
                            "response_created"))
        return out + self._finish("cancelled", now_ns, {"type": "cancelled", "reason": reason})

    def abandon(self) -> list[Action]:
        if self.state == "done":
            return []
        self.state, self.truth.status = "done", "disconnected"
        return [Record(self.truth)]
