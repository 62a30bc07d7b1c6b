"""The inbound fast path (wire.py): whole frames only, anything unusual left to websockets."""

from __future__ import annotations

import asyncio
import base64
import json

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from harness.simulator import start_simulator
from harness.simulator.wire import MESSAGE, RAW, FrameSplitter
from simclient import SimClient


def client_bytes(*frames: Frame) -> bytes:
    """Masked frames exactly as a client writes them."""
    cp = ClientProtocol(parse_uri("ws://x/"))
    cp.state = State.OPEN
    for f in frames:
        cp.send_frame(f)
    return b"".join(cp.data_to_send())


def test_splitter_handles_every_length_encoding_and_any_chunking():
    msgs = [b"x" * 10, b"y" * 300, b"z" * 70_000]
    stream = client_bytes(*(Frame(Opcode.TEXT, m) for m in msgs), Frame(Opcode.PING, b"p"),
                          Frame(Opcode.BINARY, b"bin"))
    for step in (1, 7, 4096, len(stream)):
        sp, got = FrameSplitter(2**24), []
        for i in range(0, len(stream), step):
            got += sp.feed(stream[i:i + step])
        kinds = [k for k, _ in got]
        assert kinds == [MESSAGE, MESSAGE, MESSAGE, RAW, MESSAGE] and not sp.off and sp.buf == b""
        assert [p for k, p in got if k == MESSAGE] == msgs + [b"bin"]


def test_splitter_passes_fragments_whole_and_gives_up_on_nonsense():
    stream = client_bytes(Frame(Opcode.TEXT, b"ab", fin=False), Frame(Opcode.CONT, b"cd"))
    got = FrameSplitter(2**24).feed(stream)
    assert [k for k, _ in got] == [RAW, RAW] and b"".join(p for _, p in got) == stream
    sp = FrameSplitter(2**24)
    assert sp.feed(b"\x81\x05hello") == [(RAW, b"\x81\x05hello")] and sp.off  # unmasked
    sp = FrameSplitter(100)
    big = client_bytes(Frame(Opcode.TEXT, b"q" * 200))
    assert sp.feed(big[:10]) == [(RAW, big[:10])] and sp.off  # oversize: websockets closes 1009


def test_fragmented_messages_pings_big_appends_and_oversize_over_sockets():
    async def main(url):
        c = await SimClient.open(url)
        await c.wait_for("session.created")
        update = json.dumps({"type": "session.update", "session": {"turn_detection": None}})
        await c.ws.send([update[:20], update[20:]])  # a fragmented text message
        updated = await c.wait_for("session.updated")
        pong = await c.ws.ping()
        latency = await asyncio.wait_for(pong, 5)
        audio = base64.b64encode(bytes(48_000 * 10)).decode()  # 10 s in one 640 kB append
        await c.send({"type": "input_audio_buffer.append", "audio": audio})
        await c.send({"type": "input_audio_buffer.commit"})
        committed = await c.wait_for("input_audio_buffer.committed")
        await c.ws.send("x" * (17 * 1024 * 1024))
        closed = await c.wait_closed()
        return updated, latency, committed, closed

    with start_simulator("ideal") as sim:
        updated, latency, committed, closed = asyncio.run(asyncio.wait_for(main(sim.url), 30))
    assert updated["session"]["turn_detection"] is None and latency < 1
    assert committed["item_id"].startswith("item_")
    assert closed.rcvd is not None and closed.rcvd.code == 1009
