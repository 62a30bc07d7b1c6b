"""A small asyncio test client for the simulator: connect, stream fixture frames, wait for events.

Not the harness's client (that one is gevent and measures latency); this one exists so simulator
tests can speak the protocol over real loopback sockets with a few lines each.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable, Sequence
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness import audio, fixtures
from harness.protocol import events as ev

PATH = "/voice-live/realtime"
API_VERSION = "2026-07-15"


def sim_url(base: str, *, api_version: str | None = API_VERSION, model: str | None = "gpt-realtime",
            **params: str) -> str:
    q: dict[str, str] = {}
    if api_version is not None:
        q["api-version"] = api_version
    if model is not None:
        q["model"] = model
    q.update({k.replace("_", "-"): v for k, v in params.items()})
    return f"{base}{PATH}?{urlencode(q)}"


async def handshake_status(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a rejected upgrade; (101, headers, b"") if it was accepted."""
    try:
        async with connect(url, additional_headers=headers, open_timeout=10) as ws:
            return 101, dict(ws.response.headers), b""
    except InvalidStatus as exc:
        r = exc.response
        return r.status_code, {k.lower(): v for k, v in r.headers.raw_items()}, r.body or b""


class SimClient:
    """Records every server event with its arrival instant; ``wait_for`` scans forward from a cursor."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.raw: list[str | bytes] = []  # frames that were not JSON objects
        self.arrivals: list[int] = []
        self.sent_frames: list[tuple[float, int]] = []  # (buffer end position ms, monotonic ns when sent)
        self.position_ms = 0.0
        self.cursor = 0
        self.closed: ConnectionClosed | None = None
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, base: str, *, headers: dict[str, str] | None = None, subprotocols: list[str] | None = None,
                   **url_params: Any) -> "SimClient":
        ws = await connect(sim_url(base, **url_params), additional_headers=headers, subprotocols=subprotocols,
                           max_size=2**24, compression=None, open_timeout=10)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                try:
                    event = json.loads(msg)
                except (ValueError, UnicodeDecodeError):
                    self.raw.append(msg)
                else:
                    self.events.append(event)
                    self.arrivals.append(time.monotonic_ns())
                self._new.set()
        except ConnectionClosed as exc:
            self.closed = exc
        finally:
            if self.closed is None:  # a normal close (1000/1001) ends the iteration without raising
                await self.ws.wait_closed()
                self.closed = self.ws.protocol.close_exc
            self._new.set()

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def update(self, session: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        await self.send(ev.session_update(session, event_id="evt_update"))
        return await self.wait_for(lambda e: e["type"] in (ev.SESSION_UPDATED, ev.ERROR), timeout)

    async def stream(self, frames: Sequence[str], chunk_ms: float, speed: float = 1.0) -> None:
        """Append ``frames`` paced at ``speed`` x real time (0: as fast as possible)."""
        t0 = time.monotonic()
        for i, frame in enumerate(frames):
            data = ev.append_message(frame).decode()
            at = time.monotonic_ns()  # before the send: on loopback the server's kernel stamps the
            await self.ws.send(data)  # arrival inside this very send() call
            self.position_ms += chunk_ms
            self.sent_frames.append((self.position_ms, at))
            if speed > 0:
                delay = t0 + (i + 1) * chunk_ms / 1000.0 / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def say(self, fixture_id: str, fmt: audio.AudioFormat | None = None, *, chunk_ms: int = 20,
                  silence_ms: int = 800, speed: float = 1.0) -> fixtures.FrameSet:
        """Stream a fixture then ``silence_ms`` of digital silence; returns the frames' metadata."""
        fmt = fmt or audio.input_format()
        fs = fixtures.frames(fixture_id, fmt, chunk_ms)
        quiet = fixtures.silence_frames(fmt, chunk_ms, count=max(0, silence_ms // chunk_ms))
        await self.stream(fs.frames + quiet, chunk_ms, speed)
        return fs

    async def silence(self, ms: int, fmt: audio.AudioFormat | None = None, chunk_ms: int = 20,
                      speed: float = 1.0) -> None:
        fmt = fmt or audio.input_format()
        await self.stream(fixtures.silence_frames(fmt, chunk_ms, count=ms // chunk_ms), chunk_ms, speed)

    async def wait_for(self, what: str | Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The next event (from the cursor) of type ``what`` / matching it; moves the cursor past it."""
        match = (lambda e: e["type"] == what) if isinstance(what, str) else what
        deadline = time.monotonic() + timeout
        while True:
            while self.cursor < len(self.events):
                e = self.events[self.cursor]
                self.cursor += 1
                if match(e):
                    return e
            if self.closed is not None and self.cursor >= len(self.events):
                raise AssertionError(f"connection closed while waiting for {what!r}: {self.closed}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [e["type"] for e in self.events[-15:]]
                raise AssertionError(f"timed out waiting for {what!r}; last events: {seen}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def sent_instant(self, position_ms: float) -> int:
        """Monotonic instant at which buffer position ``position_ms`` left this client."""
        for end, at in self.sent_frames:
            if end + 1e-6 >= position_ms:
                return at - int((end - position_ms) * 1e6)
        raise ValueError(f"position {position_ms} ms was never sent")

    def types(self, start: int = 0) -> list[str]:
        return [e["type"] for e in self.events[start:]]

    def of_type(self, etype: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == etype]

    async def wait_closed(self, timeout: float = 10.0) -> ConnectionClosed:
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        assert self.closed is not None
        return self.closed

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
