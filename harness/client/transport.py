"""One WebSocket connection: websockets' sans-I/O ClientProtocol driven over a gevent socket.

Why not a library connection object: a reader greenlet that stamps every socket read *before*
parsing gives the earliest honest arrival time, and skips the queue hand-off that made
websockets.sync 40 % more expensive under gevent (shared/notes §4.5, §5.4). The module uses
gevent's socket/ssl explicitly, so it is cooperative with or without monkey patching.
"""

from __future__ import annotations

import os
import random
import socket as _stdsocket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

import gevent
import gevent.lock
import ssl

from gevent import socket
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from .. import kstamp
from ..histogram import MsHistogram
from .dial import READ_SIZE, ConnectError, dial
from .tlsio import TlsSocket

try:
    from websockets.speedups import apply_mask
except ImportError:  # pure-Python websockets build
    from websockets.utils import apply_mask

MAX_MESSAGE = 16 * 1024 * 1024
#: With kernel timestamps on (the default on plain ws://), which instant stamps received events:
#: "kernel" (the SO_TIMESTAMPNS arrival instant, free of this process's scheduling delay; harness/
#: kstamp.py) or "user" (the reader's clock right after the read returns; benchmarks compare both).
EVENT_STAMP = "kernel"
_OPEN = State.OPEN
_HDR_SHORT, _HDR_MID, _HDR_LONG = struct.Struct("!BB"), struct.Struct("!BBH"), struct.Struct("!BBQ")
# Masking keys only defeat cache poisoning by hostile browser scripts (RFC 6455 §10.3); a PRNG seeded
# from the OS is plenty for a load generator and saves a getrandom() syscall per frame.
_mask_rng = random.Random(os.urandom(16))


def text_frame(data: bytes) -> bytes:
    """A masked, final client TEXT frame, byte-identical in layout to websockets' Frame.serialize."""
    n = len(data)
    if n < 126:
        head = _HDR_SHORT.pack(0x81, 0x80 | n)
    elif n < 65536:
        head = _HDR_MID.pack(0x81, 0xFE, n)
    else:
        head = _HDR_LONG.pack(0x81, 0xFF, n)
    mask = _mask_rng.getrandbits(32).to_bytes(4, "little")
    return b"".join((head, mask, apply_mask(data, mask)))

#: (payload, monotonic ns at read, is_binary) -> None. Called in the reader greenlet.
OnMessage = Callable[[bytes, int, bool], None]


@dataclass
class CloseInfo:
    code: int | None = None
    reason: str = ""
    error: str = ""  # set when the socket failed rather than closed cleanly
    t_ns: int = 0


@dataclass
class Transport:
    """A connected, open WebSocket. Create with :func:`connect`."""

    sock: socket.socket | TlsSocket
    protocol: ClientProtocol
    on_message: OnMessage
    kernel_stamps: bool = False
    stamp_delays: MsHistogram = field(default_factory=MsHistogram)  # user-space stamp - kernel stamp, per read
    closed: CloseInfo | None = None
    _lock: gevent.lock.Semaphore = field(default_factory=gevent.lock.Semaphore)
    _reader: gevent.Greenlet | None = None
    _fragments: list[bytes] = field(default_factory=list)
    _fragment_binary: bool = False
    _send_error: str = ""

    def __post_init__(self) -> None:
        # The OS-level socket under gevent's wrapper, for the one-syscall send path. Under TLS
        # (tlsio.py, sans-I/O) the frame is encrypted in memory first and the records take the same path.
        tls = self.sock if isinstance(self.sock, TlsSocket) else None
        self._wire = tls.raw if tls is not None else self.sock  # where bytes ready for the wire go
        self._encrypt = tls.encrypt if tls is not None else None
        raw = getattr(self._wire, "_sock", None)
        self._raw_send = raw.send if raw is not None and raw.gettimeout() == 0.0 else None

    def start(self, early: list[Frame] | None = None, t_early: int = 0) -> None:
        self._reader = gevent.spawn(self._read_loop, early or [], t_early)

    # -- sending -------------------------------------------------------------------------------
    def send_text(self, data: bytes, block: bool = True) -> bool:
        """Send one text message (UTF-8 bytes). Raises ConnectionError once the connection is gone.

        Hot path (every 20 ms per session): while the connection is OPEN and no other send is
        blocked, the frame is built here (and encrypted, over wss://) and handed to the kernel in
        one non-blocking send(), without websockets' Frame objects, gevent's sendall wrapper (which
        adds a getsockopt syscall per call) or the lock: no greenlet switch can happen in between,
        so frames never interleave. A partial write finishes under the lock, like any other send.

        ``block=False`` (the mic's timer callback, which runs in the event loop and must not wait):
        returns False, having sent nothing, when the frame could not start at once (another send
        holds the connection); the rest of a partial write is finished by a helper greenlet that
        holds the lock, so later frames wait behind it in order.
        """
        if self.closed is not None:
            raise ConnectionError("connection closed")
        proto, lock = self.protocol, self._lock
        try:
            if (proto._state is _OPEN and self._raw_send is not None and not lock.locked()
                    and not proto.expect_continuation_frame and not proto.debug):
                if self._send_error:
                    raise ConnectionError(self._send_error)
                frame = text_frame(data)
                if self._encrypt is not None:
                    frame = self._encrypt(frame)
                try:
                    sent = self._raw_send(frame)
                except BlockingIOError:
                    sent = 0
                if sent < len(frame):
                    if not block:
                        lock.acquire(blocking=False)  # free (checked above, nothing switched since)
                        gevent.spawn(self._finish_write, memoryview(frame)[sent:])
                        return True
                    with lock:
                        self._wire.sendall(memoryview(frame)[sent:])
                return True
            if not block:
                return False
            with lock:  # another send is blocked, or not OPEN (websockets raises the right error)
                if proto._state is _OPEN and not proto.expect_continuation_frame and not proto.debug:
                    self.sock.sendall(text_frame(data))
                else:
                    proto.send_text(data)
                    self._flush()
            return True
        except (OSError, ssl.SSLError) as exc:
            # After a reset the kernel reports ECONNRESET to whichever call comes first; if a send
            # took it, the reader only sees a bare EOF, so it needs the cause from here.
            self._send_error = self._send_error or f"{type(exc).__name__}: {exc}"
            raise ConnectionError(str(exc)) from exc

    def _finish_write(self, rest: memoryview) -> None:
        """The rest of a partial non-blocking write, with the lock the caller took for us."""
        try:
            self._wire.sendall(rest)
        except (OSError, ssl.SSLError) as exc:  # the next send raises ConnectionError with this cause
            self._send_error = self._send_error or f"{type(exc).__name__}: {exc}"
        finally:
            self._lock.release()

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.sock.sendall(chunk)
            else:  # websockets asks for a half-close after a close handshake
                try:
                    self.sock.shutdown(_stdsocket.SHUT_WR)
                except OSError:
                    pass

    # -- receiving -----------------------------------------------------------------------------
    def _read_loop(self, early: list[Frame], t_early: int) -> None:
        proto = self.protocol
        kernel = self.kernel_stamps
        use_kernel = kernel and EVENT_STAMP == "kernel"
        recv, recvmsg, delays = self.sock.recv, getattr(self.sock, "recvmsg", None), self.stamp_delays
        mono = time.monotonic_ns
        for frame in early:  # frames that arrived in the same read as the 101 response
            self._on_frame(frame, t_early)
        while True:
            try:
                if kernel:
                    data, ancdata, _flags, _addr = recvmsg(READ_SIZE, kstamp.ANCILLARY_SIZE)
                else:
                    data = recv(READ_SIZE)
            except (OSError, ssl.SSLError) as exc:
                self._mark_closed(error=f"{type(exc).__name__}: {exc}")
                return
            t = mono()  # the user-space stamp: before any parsing
            if kernel and ancdata:
                k = kstamp.mono_ns(ancdata)
                if k:
                    delays.add((t - k) / 1e6)
                    if use_kernel and k <= t:
                        t = k
            if not data:
                proto.receive_eof()
                self._mark_closed(error="" if proto.close_rcvd else
                                  self._send_error or "connection closed by peer without close frame")
                return
            self._dispatch(data, t)
            if self.closed is not None:
                return

    def _dispatch(self, data: bytes, t: int) -> None:
        proto = self.protocol
        proto.receive_data(data)
        for event in proto.events_received():
            if isinstance(event, Frame):
                self._on_frame(event, t)
        if not proto.writes and proto._state is _OPEN:
            return  # nothing to answer (no ping, no close): skip the lock and the flush
        try:
            with self._lock:
                self._flush()  # pongs and close replies (and our close frame when we failed the connection)
        except OSError as exc:
            self._mark_closed(error=f"{type(exc).__name__}: {exc}")
            return
        exc = proto.parser_exc
        if exc is not None and self.closed is None:
            # We failed the connection (1009 message too big, 1002/1007 protocol error): it is over now,
            # whether or not the peer ever answers our close frame or closes TCP.
            sent = proto.close_sent
            self._mark_closed(code=sent.code if sent else 1006, reason=sent.reason if sent else "",
                              error=f"{type(exc).__name__}: {exc}")
            return
        if proto.close_code is not None and self.closed is None and proto.state.name == "CLOSED":
            self._mark_closed()

    def _on_frame(self, frame: Frame, t: int) -> None:
        op = frame.opcode
        if op is Opcode.TEXT or op is Opcode.BINARY:
            if frame.fin:
                self.on_message(frame.data, t, op is Opcode.BINARY)
            else:
                self._fragments = [frame.data]
                self._fragment_binary = op is Opcode.BINARY
        elif op is Opcode.CONT:
            self._fragments.append(frame.data)
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                self.on_message(data, t, self._fragment_binary)
        elif op is Opcode.CLOSE:
            rcvd = self.protocol.close_rcvd
            self._mark_closed(code=rcvd.code if rcvd else 1005, reason=rcvd.reason if rcvd else "")

    def _mark_closed(self, error: str = "", code: int | None = None, reason: str = "") -> None:
        if self.closed is None:
            if code is None:
                code = self.protocol.close_code if self.protocol.close_rcvd else (1006 if error else None)
            self.closed = CloseInfo(code=code, reason=reason or self.protocol.close_reason or "",
                                    error=error, t_ns=time.monotonic_ns())
            self.on_message(b"", self.closed.t_ns, False)  # empty payload = "connection closed" signal

    # -- closing -------------------------------------------------------------------------------
    def close(self, code: int = 1000, timeout: float = 2.0) -> None:
        """Close handshake, bounded in time; safe to call twice."""
        if self.closed is None:
            try:
                with self._lock:
                    self.protocol.send_close(code)
                    self._flush()
            except Exception:
                pass
        if self._reader is not None and gevent.getcurrent() is not self._reader:
            self._reader.join(timeout)
            self._reader.kill(block=False)
            self._reader = None  # the greenlet holds our bound method: no cycle left behind
            parser = getattr(self.protocol, "parser", None)
            if parser is not None and hasattr(parser, "close"):
                parser.close()  # websockets' parser generator references its protocol: free it now
        try:
            self.sock.close()
        except OSError:
            pass
        if self.closed is None:
            self.closed = CloseInfo(code=code, t_ns=time.monotonic_ns())


WALL_MINUS_MONO_NS = time.time_ns() - time.monotonic_ns()


def connect(url: str, headers: dict[str, str], on_message: OnMessage, *, open_timeout: float = 30.0,
            kernel_stamps: bool = False, ssl_context: ssl.SSLContext | None = None,
            subprotocols: list[str] | None = None) -> Transport:
    """Open the WebSocket (TCP, TLS for wss://, upgrade) within ``open_timeout`` seconds."""
    uri = parse_uri(url)
    proto = ClientProtocol(uri, max_size=MAX_MESSAGE, subprotocols=subprotocols)  # no extensions: no deflate
    try:
        with gevent.Timeout(open_timeout, ConnectError("timeout", f"no handshake within {open_timeout:g}s")):
            d = dial(uri.host, uri.port, uri.secure, proto, headers, ssl_context=ssl_context,
                     kernel_stamps=kernel_stamps)
    except ConnectError:
        raise
    transport = Transport(sock=d.sock, protocol=proto, on_message=on_message, kernel_stamps=d.kernel_stamps)
    transport.start(d.early, d.early_ns)
    return transport


