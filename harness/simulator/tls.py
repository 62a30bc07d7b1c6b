"""TLS for the simulator's connections, sans-I/O: an ``ssl.SSLObject`` over memory BIOs on the plain TCP transport.

Why not asyncio's own TLS (``create_server(ssl=...)``, asyncio/sslproto.py): at 200 wss:// sessions
its pure-Python record plumbing (buffered reads, a state machine and flow control per read) took a
quarter of the simulator's core on top of the decryption itself (py-spy, bench harness-sim-tls);
the core's lag then batched several appends per read, whose stamps are the last segment's, and
made the ground truth late. Here the connection reads the TCP socket through asyncio's plain
selector transport, exactly as ws:// does (same kernel stamps, same fast path, connection.py), and
decrypts each read in the same call; websockets writes to :class:`TlsTransport`, which encrypts
and hands the records to the same TCP transport (its buffer, ``add_writer`` on EAGAIN and
pause/resume_writing are the plain path's). The TLS handshake runs inside websockets' opening
handshake, so ``open_timeout`` bounds it and a failure aborts the socket like any other.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

log = logging.getLogger("voiceload.simulator")
READ_CHUNK = 65536  # > one TLS record's plaintext (16 KB): one SSLObject.read per record
_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


class TlsTransport(asyncio.Transport):
    """What the connection's protocol writes to: records go to the TCP transport ``raw`` below.

    The protocol of ``raw`` stays the connection itself: it calls :meth:`decrypt` on every read.
    """

    def __init__(self, raw: asyncio.Transport, ctx: ssl.SSLContext) -> None:
        super().__init__()
        self.raw = raw
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.ctx = ctx
        self.secure = False  # handshake complete
        self._held: list[bytes] = []  # written before the handshake completed (nothing, normally)
        self._closing = False

    # -- reading: called by the connection with each read of the TCP socket ------------------------
    def decrypt(self, data: bytes) -> bytes | None:
        """The plaintext these TCP bytes complete (b"" if none), None once the peer closed TLS
        (close_notify). Raises ssl.SSLError when the handshake or a record is bad."""
        self.incoming.write(data)
        if not self.secure:
            try:
                self.obj.do_handshake()
            except _WANT:
                self._flush()
                return b""
            except ssl.SSLError:
                self._flush()  # our alert, if any, before the caller aborts
                raise
            self.secure = True
            held, self._held = self._held, []
            for d in held:
                self.obj.write(d)
            self._flush()
        read, incoming, obj = self.obj.read, self.incoming, self.obj
        parts: list[bytes] = []
        try:
            # A read of N whole records decrypts in N calls, no exception; only a partial record
            # left over costs the SSLWantReadError below.
            while incoming.pending or obj.pending():
                chunk = read(READ_CHUNK)
                if not chunk:
                    return None
                parts.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            return None
        if self.outgoing.pending:  # TLS 1.3 may answer a read (key update)
            self._flush()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _flush(self) -> None:
        if self.outgoing.pending and not self.raw.is_closing():
            self.raw.write(self.outgoing.read())

    # -- asyncio.Transport: what websockets calls ----------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        if not self.secure:
            self._held.append(bytes(data))
            return
        self.obj.write(data)
        self.raw.write(self.outgoing.read())

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        """close_notify, then the TCP transport closes once its buffer is written (not waiting for the
        peer's close_notify: websockets has already finished its closing handshake)."""
        if self._closing:
            return
        self._closing = True
        if self.secure:
            try:
                self.obj.unwrap()
            except (ssl.SSLError, ValueError):
                pass  # want-read: ours is sent, theirs is not awaited
            self._flush()
        self.raw.close()

    def abort(self) -> None:
        self._closing = True
        self.raw.abort()

    def is_closing(self) -> bool:
        return self._closing or self.raw.is_closing()

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close: websockets closes instead

    def write_eof(self) -> None:
        raise NotImplementedError("TLS cannot half-close")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.obj
        if name == "sslcontext":
            return self.ctx
        if name == "peercert":
            return self.obj.getpeercert() if self.secure else default
        if name == "cipher":
            return self.obj.cipher() if self.secure else default
        return self.raw.get_extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.raw.get_write_buffer_size() + self.outgoing.pending

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.raw.get_write_buffer_limits()

    def pause_reading(self) -> None:
        self.raw.pause_reading()

    def resume_reading(self) -> None:
        self.raw.resume_reading()

    def is_reading(self) -> bool:
        return self.raw.is_reading()

    def get_protocol(self) -> Any:
        return self.raw.get_protocol()

    def set_protocol(self, protocol: Any) -> None:
        raise NotImplementedError("the connection reads the TCP transport itself")
