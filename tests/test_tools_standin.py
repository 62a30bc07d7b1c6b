"""Function calling against an independent loopback Voice Live stand-in (not our simulator).

The stand-in below is written from the protocol reference (§4 function calls, §6a): it detects the
caller's speech, answers with a response whose output items are ``function_call``s (item added,
conversation.item.created, arguments delta/done, item done, response.done), then waits for what the
caller sends. The tests check that the caller answers exactly like the official SDK sample does
(``conversation.item.create`` {function_call_output, call_id, output} with previous_item_id = the
call's item, after the calling response is done, then one ``response.create``) and that the turn
record measures the round trip.
"""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import gevent
import orjson
import pytest

import faultserver as fs
from harness.client.session import CallerSession, Endpoint, SessionOptions
from harness.protocol import events as ev
from harness.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


def _scenario(tools: list[dict[str, Any]], expect: dict[str, Any] | None = None, turn_timeout: str = "4s"):
    doc = {"name": "tools-standin", "target": "embedded", "tools": tools,
           "conversation": [{"fixture": "car_call_mom", "pause_ms": 100, "expect": expect or {}}],  # short: the stand-in ignores words
           "audio": {"trailing_silence_ms": 0}, "load": {"turn_timeout": turn_timeout}}
    return parse_scenario(doc, "inline.yaml")


ORDER_TOOL = {"name": "get_order_status", "description": "Look up an order",
              "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                             "required": ["order_id"]},
              "executor": {"kind": "mock", "result": {"order_id": "{order_id}", "status": "shipped"},
                           "latency": 30}}
WEATHER_TOOL = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "executor": {"kind": "mock", "result": {"city": "{city}", "temp_c": 21},
                             "latency": {"kind": "uniform", "min_ms": 10, "max_ms": 20}}}


class StandIn:
    """Script: one turn whose first response calls ``calls`` (name, arguments) in parallel."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]], answer_wait_s: float = 3.0, status: str = "completed"):
        self.calls = calls
        self.status = status
        self.answer_wait_s = answer_wait_s
        self.log: list[tuple[float, dict[str, Any]]] = []  # (monotonic s, event) of what the caller sent
        self.call_done_at: float | None = None
        self.response_done_at: float | None = None
        self.answered = False

    def __call__(self, c: fs.Conn) -> None:
        c.open_session()
        c.wait_speech()
        if self.status != "completed":
            gevent.sleep(1.2)  # after the caller's speech: a response cut before it is a VAD split to the caller
        c.speech_detected()
        c.send(ev.server_event(ev.SPEECH_STOPPED, item_id="item_u1", audio_end_ms=900))
        c.send(ev.server_event(ev.COMMITTED, item_id="item_u1", previous_item_id=None))
        r1 = "resp_call"
        c.send(ev.server_event(ev.RESPONSE_CREATED, response=ev.response_object(r1)))
        items = []
        for k, (name, args) in enumerate(self.calls):
            item = {"id": f"item_fc{k}", "object": "realtime.item", "type": "function_call", "status": "in_progress",
                    "name": name, "call_id": f"call_{k}", "arguments": ""}
            c.send(ev.server_event(ev.OUTPUT_ITEM_ADDED, response_id=r1, output_index=k, item=item))
            c.send(ev.server_event(ev.ITEM_CREATED, previous_item_id="item_u1", item=item))
            text = json.dumps(args)
            for piece in (text[: len(text) // 2], text[len(text) // 2:]):
                c.send(ev.server_event("response.function_call_arguments.delta", response_id=r1, item_id=item["id"],
                                       output_index=k, call_id=item["call_id"], delta=piece))
            c.send(ev.server_event("response.function_call_arguments.done", response_id=r1, item_id=item["id"],
                                   output_index=k, call_id=item["call_id"], name=name, arguments=text))
            self.call_done_at = self.call_done_at or time.monotonic()
            done = {**item, "status": "completed", "arguments": text}
            c.send(ev.server_event(ev.OUTPUT_ITEM_DONE, response_id=r1, output_index=k, item=done))
            items.append(done)
        gevent.sleep(0.1)  # the executors (30 ms) finish before the response does: outputs must still wait
        self.response_done_at = time.monotonic()
        c.send(ev.server_event(ev.RESPONSE_DONE, response=ev.response_object(r1, status=self.status, output=items)))
        start = len(c.received)
        deadline = time.monotonic() + self.answer_wait_s
        while time.monotonic() < deadline and not any(e.get("type") == ev.RESPONSE_CREATE for e in c.received[start:]):
            gevent.sleep(0.005)
        for e in c.received[start:]:
            self.log.append((time.monotonic(), e))
        if not any(e.get("type") == ev.RESPONSE_CREATE for e in c.received[start:]):
            return  # the caller never asked for the answer: the turn must end as tool_timeout
        self.answered = True
        r2 = "resp_answer"
        c.send(ev.server_event(ev.RESPONSE_CREATED, response=ev.response_object(r2)))
        c.send(ev.server_event(ev.OUTPUT_ITEM_ADDED, response_id=r2, output_index=0,
                               item={"id": "item_a2", "type": "message", "role": "assistant"}))
        gevent.sleep(0.05)
        for _ in range(3):
            c.send(ev.server_event(ev.AUDIO_DELTA, response_id=r2, item_id="item_a2", output_index=0, content_index=0,
                                   delta=fs.AUDIO_100MS))
        c.send(ev.server_event(ev.RESPONSE_DONE, response=ev.response_object(r2, status="completed")))


def _run(sc, script) -> tuple[list[Any], fs.Conn | None, list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []

    def wrapped(c: fs.Conn) -> None:
        try:
            script(c)
        finally:
            received.extend(c.received)

    with fs.ScriptServer(wrapped) as srv:
        ep = Endpoint(name="standin", url=lambda: srv.url, headers=dict, display=srv.url, open_timeout_s=3)
        s = CallerSession(sc, ep, SessionOptions(session_id="s1", seed=7))
        rec = s.run()
        assert rec.outcome == "ok", rec
        assert not srv.errors, srv.errors
    return s.records, None, received


def test_single_call_is_answered_like_the_sdk_sample():
    sc = _scenario([ORDER_TOOL], expect={"tool": "get_order_status", "args": {"order_id": {"regex": r"\d{4}"}}})
    script = StandIn([("get_order_status", {"order_id": "4417"})])
    records, _, received = _run(sc, script)
    update = next(e for e in received if e["type"] == ev.SESSION_UPDATE)
    assert update["session"]["tools"] == [{"type": "function", "name": "get_order_status",
                                          "description": "Look up an order",
                                          "parameters": ORDER_TOOL["parameters"]}]
    sent = [e for _, e in script.log]
    assert [e["type"] for e in sent] == [ev.ITEM_CREATE, ev.RESPONSE_CREATE]
    item = sent[0]["item"]
    assert sent[0]["previous_item_id"] == "item_fc0"
    assert item == {"type": "function_call_output", "call_id": "call_0",
                    "output": json.dumps({"order_id": "4417", "status": "shipped"})}
    [rec] = records
    assert rec.reason == "complete" and rec.complete, rec
    [call] = rec.tool_calls
    assert call["name"] == "get_order_status" and call["arguments"] == {"order_id": "4417"}
    assert call["call_id"] == "call_0" and call["ok"] is True and call["match"] is True
    assert 29 <= call["exec_ms"] < 200 and rec.tool_exec_ms == call["exec_ms"]
    # The output went out only after the calling response was done (≥ 100 ms after the arguments).
    assert rec.first_tool_call_ms is not None and call["result_ms"] - rec.first_tool_call_ms >= 95
    assert 45 <= rec.answer_first_audio_ms < 500 and rec.filler_audio_ms == 0
    assert rec.first_audio_ms > rec.first_tool_call_ms
    assert rec.expected_tool == "get_order_status" and rec.expectations_ok
    assert any(e["name"] == "tool:get_order_status" and e["ok"] for e in rec.expectations)


def test_parallel_calls_get_one_output_each_then_one_response_create():
    sc = _scenario([ORDER_TOOL, WEATHER_TOOL], expect={"tool": "get_weather", "args": {"city": "Oslo"},
                                                       "args_match": "exact"})
    script = StandIn([("get_order_status", {"order_id": "12"}), ("get_weather", {"city": "Oslo"})])
    records, _, _ = _run(sc, script)
    sent = [e for _, e in script.log]
    assert [e["type"] for e in sent] == [ev.ITEM_CREATE, ev.ITEM_CREATE, ev.RESPONSE_CREATE]
    outputs = {e["item"]["call_id"]: json.loads(e["item"]["output"]) for e in sent[:2]}
    assert outputs == {"call_0": {"order_id": "12", "status": "shipped"}, "call_1": {"city": "Oslo", "temp_c": 21}}
    assert {e["previous_item_id"] for e in sent[:2]} == {"item_fc0", "item_fc1"}
    [rec] = records
    assert rec.complete and [c["name"] for c in rec.tool_calls] == ["get_order_status", "get_weather"]
    assert [c["match"] for c in rec.tool_calls] == [False, True] and rec.expectations_ok


def test_a_failing_tool_sends_its_error_payload_and_the_turn_still_completes():
    bad = {**ORDER_TOOL, "executor": {"kind": "mock", "error_rate": 1.0, "error": {"error": "no order {order_id}"}}}
    sc = _scenario([bad], expect={"tool": "get_order_status", "args": {"order_id": "9"}})
    script = StandIn([("get_order_status", {"order_id": "9"})])
    [rec], _, _ = _run(sc, script)
    output = script.log[0][1]["item"]["output"]
    assert json.loads(output) == {"error": "no order 9"}
    assert rec.complete and rec.tool_calls[0]["ok"] is False and "no order 9" in rec.tool_calls[0]["error"]


def test_a_tool_that_never_answers_ends_the_turn_as_tool_timeout():
    never = {**ORDER_TOOL, "executor": {"kind": "mock", "latency": "never"}}
    sc = _scenario([never], turn_timeout="2s")
    script = StandIn([("get_order_status", {"order_id": "1"})], answer_wait_s=2.5)
    [rec], _, _ = _run(sc, script)
    assert not script.answered and script.log == []
    assert rec.reason == "tool_timeout" and not rec.complete
    assert rec.tool_calls[0]["ok"] is None and rec.tool_calls[0]["exec_ms"] is None
    assert rec.first_tool_call_ms is not None and rec.answer_first_audio_ms is None


class _Backend(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, str], Any]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Backend.seen.append((self.path, dict(self.headers), body))
        if body.get("order_id") == "slow":
            time.sleep(1.0)  # longer than the executor's timeout
        if body.get("order_id") == "500":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"backend exploded")
            return
        data = json.dumps({"order_id": body.get("order_id"), "status": "in transit"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def backend():
    srv = HTTPServer(("127.0.0.1", 0), _Backend)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    _Backend.seen.clear()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("order_id, ok", [("4417", True), ("500", False), ("slow", False)])
def test_http_executor_posts_the_arguments_with_secret_headers(backend, monkeypatch, order_id, ok):
    monkeypatch.setenv("ORDERS_TOKEN", "s3cret-token-value")
    tool = {**ORDER_TOOL, "executor": {"kind": "http", "url": f"{backend}/orders", "timeout": "300ms",
                                       "headers_env": {"Authorization": "ORDERS_TOKEN"}}}
    sc = _scenario([tool])
    script = StandIn([("get_order_status", {"order_id": order_id})])
    [rec], _, received = _run(sc, script)
    [(path, headers, body)] = _Backend.seen
    assert path == "/orders" and body == {"order_id": order_id} and headers["Authorization"] == "s3cret-token-value"
    output = json.loads(script.log[0][1]["item"]["output"])
    if ok:
        assert output == {"order_id": "4417", "status": "in transit"}
    elif order_id == "500":
        assert output == {"error": "HTTP 500", "body": "backend exploded"}
    else:  # the endpoint did not answer within the timeout: the model is told so, the turn goes on
        assert "timed out" in output["error"] and 290 <= rec.tool_calls[0]["exec_ms"] < 900
    assert rec.complete and rec.tool_calls[0]["ok"] is ok
    everything = orjson.dumps(rec.to_dict()).decode() + json.dumps(received)
    assert "s3cret" not in everything
    assert os.environ["ORDERS_TOKEN"] == "s3cret-token-value"


def test_a_cancelled_calling_response_is_not_answered_and_ends_the_turn():
    sc = _scenario([ORDER_TOOL], turn_timeout="6s")
    script = StandIn([("get_order_status", {"order_id": "1"})], answer_wait_s=1.0, status="cancelled")
    t0 = time.monotonic()
    [rec], _, _ = _run(sc, script)
    assert script.log == [] and not script.answered  # no output for a call the service withdrew
    assert rec.reason == "cancelled" and rec.tool_calls[0]["name"] == "get_order_status"
    assert time.monotonic() - t0 < 5.5  # the turn ended with the response, not at the 6 s turn timeout
