"""Tool-call fields of a turn record and the tool expectation (definitions in docs/metrics.md)."""

from __future__ import annotations

from typing import Any

from .records import TurnRecord
from .timeline import TurnTimeline
from .tools import ToolExpect, parse_arguments

NS = 1_000_000


def fill(rec: TurnRecord, turn: TurnTimeline, bytes_per_ms: float, expect: ToolExpect | None) -> None:
    """Set tool_calls, first_tool_call_ms, tool_exec_ms, answer_first_audio_ms, filler_audio_ms."""
    if expect is not None:
        rec.expected_tool = expect.tool
    st = turn.tools
    if st is None or not st.calls:
        return
    end = turn.speech_end_ns or None
    calls = []
    for c in st.calls:
        args = parse_arguments(c.arguments)
        calls.append({"kind": c.kind, "name": c.name, "call_id": c.call_id, "arguments": args,
                      "args_done_ms": _ms(c.args_done_ns, end), "result_ms": _ms(c.result_ns, end),
                      "exec_ms": None if c.exec_ms is None else round(c.exec_ms, 3), "ok": c.ok,
                      **({"error": c.error} if c.error else {}),
                      **({"match": expect.matches(c.name, args)} if expect is not None else {})})
    rec.tool_calls = calls
    rec.first_tool_call_ms = _ms(st.first_call_ns, end)
    execs = [c.exec_ms for c in st.calls if c.exec_ms is not None]
    rec.tool_exec_ms = round(max(execs), 3) if execs else None
    result = st.result_ns
    if result is not None:
        rec.answer_first_audio_ms = _ms(st.answer_first_audio_ns, result)
        rec.filler_audio_ms = round(sum(n for t, n in turn.deltas if t < result) / bytes_per_ms, 3)
    marks = {"first_tool_call": st.first_call_ns, "tool_result": result}
    ref = turn.speech_end_ns or turn.utterance_start_ns
    rec.marks.update({k: round((v - ref) / NS, 3) for k, v in marks.items() if v is not None and ref})


def evaluate(rec: TurnRecord, expect: ToolExpect) -> tuple[bool, str]:
    """Did the agent call the expected tool with matching arguments (``tool: none``: call nothing)?"""
    called = [f"{c['name']}({c['arguments']})" for c in rec.tool_calls][:4]
    if expect.tool == "none":
        return not rec.tool_calls, f"calls={called}"
    ok = any(c.get("match") for c in rec.tool_calls)
    want = f"{expect.tool}({expect.args})" if expect.args is not None else expect.tool
    return ok, f"expected={want} calls={called}"[:300]


def _ms(t: int | None, ref: int | None) -> float | None:
    if t is None or ref is None:
        return None
    return round((t - ref) / NS, 3)
