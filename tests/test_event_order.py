"""Cascaded vs realtime event order (reference §6a) and the current API surface, over loopback."""

from __future__ import annotations

import asyncio

from harness.protocol import session as ps
from harness.simulator import start_simulator
from simclient import SimClient

USER_ORDER_CASCADED = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                       "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed",
                       "conversation.item.created", "response.created", "response.output_item.added",
                       "conversation.item.created", "response.content_part.added"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def one_turn(url: str, **open_kw) -> SimClient:
    c = await SimClient.open(url, **open_kw)
    await c.wait_for("session.created")
    await c.say("cs_order_status", silence_ms=900)
    await c.wait_for("response.done", 20)
    await asyncio.sleep(0.3)  # a late transcription (realtime order) would land now
    await c.close()
    return c


def _core(types: list[str]) -> list[str]:
    """Event types up to the first audio delta, without deltas of the user's transcription."""
    out = []
    for t in types:
        if t in ("session.created", "session.updated"):
            continue
        out.append(t)
        if t == "response.audio.delta":
            break
    return out


def test_which_models_are_cascaded():
    assert all(ps.is_cascaded(m) for m in ("gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-5", "gpt-5-chat", "phi4-mini"))
    assert not any(ps.is_cascaded(m) for m in ("gpt-realtime", "gpt-realtime-mini", "gpt-4o-realtime-preview",
                                               "phi4-mm-realtime"))
    assert ps.is_cascaded(None, agent=True)


def test_cascaded_models_follow_the_real_cascaded_order():
    with start_simulator("ideal") as sim:
        c = run(one_turn(sim.url, model="gpt-4.1"))
    types = c.types()
    core = _core(types)
    n = len(USER_ORDER_CASCADED)
    assert core[:n] == USER_ORDER_CASCADED, core
    # all of the transcript streams before the first audio delta, no transcription deltas (azure-speech)
    assert set(core[n:-1]) == {"response.audio_transcript.delta"} and len(core) > n + 1, core
    assert "conversation.item.input_audio_transcription.delta" not in types
    assert "response.audio_transcript.delta" not in types[types.index("response.audio.delta"):]
    user_item = c.events[types.index("conversation.item.created")]["item"]
    assert user_item["role"] == "user"
    created = c.of_type("session.created")[0]["session"]
    assert created["agent"] is None and "expires_at" in created


def test_realtime_models_keep_the_realtime_order():
    async def main(url):
        c = await SimClient.open(url, model="gpt-realtime")
        await c.wait_for("session.created")
        await c.update({"input_audio_transcription": {"model": "azure-speech"}})
        await c.say("cs_order_status", silence_ms=900)
        await c.wait_for("response.done", 20)
        await asyncio.sleep(0.3)
        await c.close()
        return c

    with start_simulator("ideal") as sim:
        c = run(main(sim.url))
    types = c.types()
    committed = types.index("input_audio_buffer.committed")
    assert types[committed + 1] == "conversation.item.created"  # the user's item right after the commit
    assert "conversation.item.input_audio_transcription.delta" in types
    # interleaved, audio first
    assert types.index("response.audio.delta") < types.index("response.audio_transcript.delta")
