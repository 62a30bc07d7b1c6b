"""Kernel receive timestamps (``SO_TIMESTAMPNS``): when a read's bytes reached the socket.

A user-space stamp taken after ``recv()`` returns carries the reader's scheduling delay, which grows
with load (at 500 sessions the caller's p99 was 7-21 ms; the simulator's event loop lags the same
way). The kernel stamps each segment on arrival, so both ends of a measurement use these when the
socket is TCP: the caller's transport (gevent, ``recvmsg``) and the simulator (asyncio, whose
selector transport reads through :class:`_StampingSocket`). Both keep them over TLS, which each end
drives sans-I/O over its own reads of the TCP socket (client/tlsio.py, simulator/tls.py): the
plaintext a read completes is handed on in the same call, so the stamp of that read still applies.

For TCP the stamp is that of the last segment the read consumed: an early message in a batched read
is stamped up to the batch span late, never early, and never later than a user-space stamp.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python does not export it
ANCILLARY_SIZE = 64
#: asyncio's selector transport asks ``recv(256 KiB)``; CPython allocates the full size per call and
#: a 1.4 KB read then cost 18 us instead of 3 (mmap/trim of the 256 KiB block); more data than this
#: simply waits for the loop's next pass (epoll is level-triggered).
READ_CAP = 65536
_TIMESPEC = struct.Struct("@ll")


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to stamp every read of ``sock``; False where it cannot (not Linux, not TCP)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except (OSError, AttributeError):
        return False
    return True


def wall_ns(ancdata: list) -> int:
    """The SO_TIMESTAMPNS arrival stamp in ``recvmsg`` ancillary data (CLOCK_REALTIME ns), or 0."""
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(payload)
            return sec * 1_000_000_000 + nsec
    return 0


def mono_ns(ancdata: list) -> int:
    """The arrival stamp on the monotonic clock, or 0.

    The realtime-to-monotonic offset is read afresh each time, so a clock step or NTP correction
    during a long run cannot bias the stamps (an import-time offset would).
    """
    k = wall_ns(ancdata)
    return k - (time.time_ns() - time.monotonic_ns()) if k else 0


# -- asyncio: the simulator's reads -------------------------------------------------------------------
_last = threading.local()  # one event loop per thread; recv and data_received run back to back in it


class _StampingSocket(socket.socket):
    """asyncio's selector transport reads with ``self._sock.recv(n)`` (or ``recv_into`` for a buffered
    protocol such as its TLS layer) and hands the bytes to the protocol in the same call; these keep
    the read's kernel stamp, and which socket it came from, for :func:`take_read_stamp`."""

    __slots__ = ()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data, ancdata, _flags, _addr = self.recvmsg(min(bufsize, READ_CAP), ANCILLARY_SIZE, flags)
        _last.wall_ns, _last.fd = wall_ns(ancdata), self.fileno()
        return data

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        n, ancdata, _flags, _addr = self.recvmsg_into([view[:nbytes] if nbytes else view], ANCILLARY_SIZE, flags)
        _last.wall_ns, _last.fd = wall_ns(ancdata), self.fileno()
        return n


def stamp_asyncio_reads(transport: object) -> int:
    """Make an asyncio TCP transport keep kernel stamps for :func:`take_read_stamp`; returns the TCP
    socket's descriptor to pass to it, or 0. (The simulator's TLS decrypts on top of this plain
    transport, simulator/tls.py, so it is always the TCP transport that is stamped.)

    Relies on a private detail (``transport._sock`` is the socket a selector transport reads); anything
    unexpected (another transport class, asyncio's own TLS transport, a socket subclass) leaves the
    transport untouched and returns 0.
    """
    sock = getattr(transport, "_sock", None)
    get_extra = getattr(transport, "get_extra_info", None)
    if type(sock) is not socket.socket or get_extra is None or get_extra("sslcontext") is not None:
        return 0
    if sock.type != socket.SOCK_STREAM or not enable(sock):
        return 0
    sock.__class__ = _StampingSocket
    return sock.fileno()


def take_read_stamp(fd: int = -1) -> int:
    """The kernel arrival stamp (CLOCK_REALTIME ns) of this thread's last stamped read, once; else 0.
    With ``fd``, only if that read was on that socket (a TLS read that completed no record leaves its
    stamp behind, which must not date another connection's data)."""
    k = getattr(_last, "wall_ns", 0)
    if fd >= 0 and getattr(_last, "fd", -1) != fd:
        return 0
    _last.wall_ns = 0
    return k
