"""A minimal Voice Live peer that can absorb 1000+ real-time sessions on one core (pacing capacity).

Above ~450 sessions the simulator (VAD and all) saturates its core, stops reading, and TCP
back-pressure then delays the *load generator's* sends: the bench would measure the simulator.
This peer does the least a server can: a hand-written WebSocket upgrade, ``session.created`` and
``session.updated``, then it discards every byte it receives (no frame parsing) and, per session,
plays a canned response on a timer (``response.created``, 20 deltas of 100 ms audio 50 ms apart,
``response.done``). The audio is a voice-level tone after 40 ms of silence, as a real reply starts:
a caller decodes deltas only until it finds the first audible sample, so all-silent replies would
make it decode every delta, a cost no real agent's audio causes. There is no ground truth, so sink steps report pacing, CPU, memory and
stamping only. Plain ``select.epoll`` in one thread, pinned to a core. With ``--tls-cert/--tls-key``
it serves wss://, TLS driven sans-I/O (``ssl.SSLObject`` over memory BIOs): decrypting what it
receives is the one cost it must pay to stay a peer.

    python -m bench.sink --cpu 1        # prints "sink listening on PORT"
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import heapq
import itertools
import math
import os
import select
import signal
import socket
import ssl
import struct
import sys
import time

import orjson

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
CYCLE_S, DELTAS, DELTA_GAP_S = 6.0, 20, 0.05
_TONE = struct.pack("<2400h", *(int(3000 * math.sin(2 * math.pi * 220 * i / 24000)) for i in range(2400)))
FIRST_B64 = base64.b64encode(bytes(1920) + _TONE[:2880]).decode()  # 40 ms silence, 60 ms tone (PCM16, 24 kHz)
AUDIO_B64 = base64.b64encode(_TONE).decode()  # 100 ms of a 220 Hz tone at -21 dBFS
_ids = itertools.count()


def frame(event: dict) -> bytes:
    """One unmasked server TEXT frame."""
    data = orjson.dumps(event)
    n = len(data)
    head = struct.pack("!BB", 0x81, n) if n < 126 else (
        struct.pack("!BBH", 0x81, 126, n) if n < 65536 else struct.pack("!BBQ", 0x81, 127, n))
    return head + data


def _ev(etype: str, **fields) -> bytes:
    return frame({"type": etype, "event_id": f"ev_{next(_ids)}", **fields})


SESSION = {"id": "sess_sink", "modalities": ["text", "audio"], "input_audio_format": "pcm16",
           "output_audio_format": "pcm16", "turn_detection": {"type": "server_vad"}}


class Conn:
    __slots__ = ("sock", "buf", "out", "open", "phase", "rid", "k", "tls", "bio_in", "bio_out", "secured")

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext | None = None):
        self.sock, self.buf, self.out, self.open, self.phase, self.rid, self.k = sock, b"", b"", False, 0, "", 0
        self.tls = self.bio_in = self.bio_out = None
        self.secured = ctx is None
        if ctx is not None:
            self.bio_in, self.bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = ctx.wrap_bio(self.bio_in, self.bio_out, server_side=True)


def _plaintext(ep: select.epoll, c: Conn, data: bytes) -> bytes | None:
    """What a TLS connection's bytes decrypt to (b"" while records are incomplete), None if TLS failed."""
    c.bio_in.write(data)
    out = b""
    try:
        if not c.secured:
            try:
                c.tls.do_handshake()
                c.secured = True
            except ssl.SSLWantReadError:
                pass
        if c.secured:
            parts = []
            try:
                while True:
                    chunk = c.tls.read(1 << 20)
                    if not chunk:
                        break
                    parts.append(chunk)
            except ssl.SSLWantReadError:
                pass
            out = b"".join(parts)
    except ssl.SSLError:
        return None
    if c.bio_out.pending:
        _write_raw(ep, c, c.bio_out.read())
    return out


def _write(ep: select.epoll, c: Conn, data: bytes) -> None:
    if c.tls is not None:
        c.tls.write(data)
        data = c.bio_out.read()
    _write_raw(ep, c, data)


def _write_raw(ep: select.epoll, c: Conn, data: bytes) -> None:
    """Send now if nothing is queued; keep what the kernel did not take and wait for EPOLLOUT."""
    if not c.out:
        try:
            sent = c.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return
        data = data[sent:]
        if data:
            ep.modify(c.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)
    c.out += data


def _handshake(c: Conn) -> bytes | None:
    if b"\r\n\r\n" not in c.buf:
        return None
    head = c.buf.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    key = next((ln.split(":", 1)[1].strip() for ln in head.split("\r\n") if ln.lower().startswith("sec-websocket-key:")), "")
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    c.buf, c.open = b"", True
    return (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode() + _ev("session.created", session=SESSION) \
        + _ev("session.updated", session=SESSION)


def _next(c: Conn) -> tuple[bytes, float]:
    """The next canned message of this session's response cycle and the delay until the one after."""
    if c.phase == 0:
        c.rid, c.k, c.phase = f"resp_{next(_ids)}", 0, 1
        return _ev("response.created", response={"id": c.rid, "status": "in_progress"}), 0.2
    if c.phase == 1:
        c.k += 1
        if c.k >= DELTAS:
            c.phase = 2
        return _ev("response.audio.delta", response_id=c.rid, item_id="item_sink", output_index=0,
                   content_index=0, delta=FIRST_B64 if c.k == 1 else AUDIO_B64), DELTA_GAP_S
    c.phase = 0
    return _ev("response.done", response={"id": c.rid, "status": "completed"}), CYCLE_S - 0.2 - DELTAS * DELTA_GAP_S


def serve(port: int, ctx: ssl.SSLContext | None = None) -> None:
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(4096)
    lsock.setblocking(False)
    ep = select.epoll()
    ep.register(lsock.fileno(), select.EPOLLIN)
    conns: dict[int, Conn] = {}
    timers: list[tuple[float, int, int]] = []  # (due, seq, fd)
    seq = itertools.count()
    print(f"sink listening on {lsock.getsockname()[1]}", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        now = time.monotonic()
        timeout = max(0.0, timers[0][0] - now) if timers else 1.0
        for fd, mask in ep.poll(min(timeout, 1.0)):
            if fd == lsock.fileno():
                while True:
                    try:
                        s, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    s.setblocking(False)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[s.fileno()] = Conn(s, ctx)
                    ep.register(s.fileno(), select.EPOLLIN)
                continue
            c = conns.get(fd)
            if c is None:
                continue
            if mask & select.EPOLLOUT and c.out:
                try:
                    c.out = c.out[c.sock.send(c.out):]
                except BlockingIOError:
                    pass
                except OSError:
                    c.out = b""
                if not c.out:
                    ep.modify(fd, select.EPOLLIN)
            if not mask & select.EPOLLIN:
                continue
            try:
                data = c.sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data and c.tls is not None:
                data = _plaintext(ep, c, data)
                if data is None:  # a TLS failure ends the connection like an EOF
                    data = b""
                elif not data:
                    continue
            if not data:
                ep.unregister(fd)
                c.sock.close()
                del conns[fd]
                continue
            if not c.open:
                c.buf += data
                reply = _handshake(c)
                if reply:
                    _write(ep, c, reply)
                    heapq.heappush(timers, (time.monotonic() + CYCLE_S * (fd % 97) / 97, next(seq), fd))
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            _, _, fd = heapq.heappop(timers)
            c = conns.get(fd)
            if c is None:
                continue
            msg, delay = _next(c)
            _write(ep, c, msg)
            heapq.heappush(timers, (now + delay, next(seq), fd))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--tls-cert", default=None, help="serve wss:// with this PEM chain (and --tls-key)")
    p.add_argument("--tls-key", default=None)
    args = p.parse_args(argv)
    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    if args.cpu is not None and hasattr(os, "sched_setaffinity") and args.cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {args.cpu})
    serve(args.port, ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
