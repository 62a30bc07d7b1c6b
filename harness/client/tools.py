"""The caller's side of function calling: run each requested tool and answer it, off the mic's path.

Like the official SDK sample (azure-ai-voicelive, function calling): when the response that asked
for calls is done, each result goes back as ``conversation.item.create`` with a
``function_call_output`` item (``previous_item_id`` = the call's item), then one ``response.create``
asks for the answer. Executors start as soon as a call's arguments are complete, each in its own
greenlet, so parallel calls overlap and the real-time microphone never waits for a tool.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from typing import Any, Callable

import gevent

from ..protocol import events as ev
from ..timeline import TurnTimeline
from ..tool_timeline import FUNCTION_ARGS_DONE, ToolCall
from ..tools import Executor, FunctionTool, parse_arguments, render_result

NS = 1_000_000
MAX_OUTPUT_CHARS = 100_000  # an endpoint answering megabytes must not be forwarded whole


class ToolError(Exception):
    """An executor failed; ``payload`` is what the model is told (never contains secrets)."""

    def __init__(self, payload: Any):
        super().__init__(str(payload))
        self.payload = payload


def mcp_session_tools(mcp: list[dict[str, Any]], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """MCP entries for session.update with ``authorization`` read from the environment at connect time."""
    env = os.environ if env is None else env
    out = []
    for m in mcp:
        entry = {k: v for k, v in m.items() if k != "authorization_env"}
        if m.get("authorization_env") and env.get(m["authorization_env"]):
            entry["authorization"] = env[m["authorization_env"]]
        out.append(entry)
    return out


def session_with_tools(session: dict[str, Any], tools: list[FunctionTool], mcp: list[dict[str, Any]]) -> dict[str, Any]:
    if not tools and not mcp:
        return session
    return {**session, "tools": [t.session_tool() for t in tools] + mcp_session_tools(mcp)}


def run_executor(ex: Executor, arguments: Any, rng: random.Random, sleep: Callable[[float], None]) -> Any:
    """The tool's result (JSON-able), or raise ToolError with the error payload. Blocks this greenlet only."""
    if ex.kind == "http":
        return _http(ex, arguments)
    delay = ex.latency.sample(rng)
    if delay == float("inf"):
        while True:  # never answers: the turn's timeout (or the session's end) kills this greenlet
            sleep(3600)
    failed = ex.error_rate > 0 and rng.random() < ex.error_rate
    if delay > 0:
        sleep(delay / 1000)
    if failed:
        raise ToolError(render_result(ex.error, arguments))
    return render_result(ex.result, arguments)


def _http(ex: Executor, arguments: Any) -> Any:
    headers = {"Content-Type": "application/json"}
    for header, var in ex.headers_env:
        if os.environ.get(var):
            headers[header] = os.environ[var]
    body = json.dumps(arguments).encode()

    def post() -> tuple[int, bytes]:
        req = urllib.request.Request(ex.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=ex.timeout_s) as resp:  # noqa: S310 - the user's endpoint
                return resp.status, resp.read(MAX_OUTPUT_CHARS + 1)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(2000)

    try:  # urllib blocks: run it on gevent's thread pool so the loop (and every mic) keeps going
        status, data = gevent.get_hub().threadpool.apply(post)
    except Exception as exc:  # timeout, refused, DNS: the message names the URL, never the headers
        raise ToolError({"error": f"{type(exc).__name__}: {exc}"[:300]}) from None
    text = data[:MAX_OUTPUT_CHARS].decode("utf-8", "replace")
    if not 200 <= status < 300:
        raise ToolError({"error": f"HTTP {status}", "body": text[:500]})
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text


class ToolRunner:
    """Per session: executes function calls as they are requested and answers each calling response."""

    def __init__(self, tools: list[FunctionTool], send: Callable[[bytes], None], seed: int,
                 sleep: Callable[[float], None] = gevent.sleep, on_change: Callable[[], None] = lambda: None):
        self.tools = {t.name: t for t in tools}
        self.send = send
        self.rng = random.Random(seed ^ 0x7001)
        self.sleep = sleep
        self.on_change = on_change
        self.greenlets: list[gevent.Greenlet] = []
        self._done_responses: set[str] = set()
        self._answered: set[str] = set()

    def on_event(self, turn: TurnTimeline, etype: str) -> None:
        """Called from the reader greenlet for each routed event (cheap unless it is a tool event)."""
        st = turn.tools
        if st is None:
            return
        if etype == FUNCTION_ARGS_DONE:
            for call in st.calls:
                if call.kind == "function" and call.args_done_ns is not None and call.started_ns is None:
                    call.started_ns = time.monotonic_ns()
                    self.greenlets.append(gevent.spawn(self._execute, turn, call))
        elif etype == ev.RESPONSE_DONE and turn.response_id in st.calling:
            self._done_responses.add(turn.response_id)
            self._flush(turn, turn.response_id)

    def _execute(self, turn: TurnTimeline, call: ToolCall) -> None:
        tool = self.tools.get(call.name)
        args = parse_arguments(call.arguments)
        t0 = time.monotonic_ns()
        try:
            if tool is None:
                raise ToolError({"error": f"unknown function {call.name!r}"})
            output: Any = run_executor(tool.executor, args, self.rng, self.sleep)
            call.ok = True
        except ToolError as exc:
            output, call.ok = exc.payload, False
            call.error = json.dumps(exc.payload, default=str)[:200]
        call.exec_ms = (time.monotonic_ns() - t0) / NS
        call.output = output if isinstance(output, str) else json.dumps(output, default=str)
        self._flush(turn, call.response_id)

    def _flush(self, turn: TurnTimeline, response_id: str) -> None:
        """Once the calling response is done and every call in it has a result: outputs, then response.create."""
        st = turn.tools
        if st is None or response_id in self._answered or response_id not in self._done_responses \
                or response_id in st.cut:  # cancelled or failed: its calls are not answered
            return
        calls = [c for c in st.calls if c.response_id == response_id and c.kind == "function"]
        if not calls or any(c.exec_ms is None for c in calls):
            return
        self._answered.add(response_id)
        try:
            for c in calls:
                item = {"type": "function_call_output", "call_id": c.call_id, "output": c.output}
                self.send(ev.dumps(ev.item_create(item, previous_item_id=c.item_id or None,
                                                  event_id=ev.new_event_id())))
                c.result_ns = time.monotonic_ns()
            st.answer_requested_ns, st.answer_response_id, st.answer_first_audio_ns = time.monotonic_ns(), None, None
            self.send(ev.dumps(ev.response_create(event_id=ev.new_event_id())))
        except Exception:  # closed or closing socket (websockets raises InvalidState): the turn's outcome says so
            pass
        self.on_change()

    def stop(self) -> None:
        gevent.killall(self.greenlets, block=False)
        self.greenlets.clear()
