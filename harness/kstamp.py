"""Kernel receive timestamps (``SO_TIMESTAMPNS``): when a read's bytes reached the socket.

A user-space stamp taken after ``recv()`` returns carries the reader's scheduling delay, which grows
with load (at 500 sessions the caller's p99 was 7-21 ms; the simulator's event loop lags the same
way). The kernel stamps each segment on arrival, so both ends of a measurement use these when the
socket is plain TCP: the caller's transport (gevent, ``recvmsg``) and the simulator (asyncio, whose
selector transport reads through :class:`_StampingSocket`). The caller's TLS is sans-I/O (client/
tlsio.py), so its wss:// reads keep kernel stamps too; the simulator's asyncio TLS transport hides the
socket, so its wss:// reads keep user-space stamps.

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
    """asyncio's selector transport reads with ``self._sock.recv(n)`` and hands the bytes to the
    protocol's ``data_received`` in the same call; this ``recv`` keeps the kernel stamp for it."""

    __slots__ = ()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data, ancdata, _flags, _addr = self.recvmsg(bufsize, ANCILLARY_SIZE, flags)
        _last.wall_ns = wall_ns(ancdata)
        return data


def stamp_asyncio_reads(transport: object) -> bool:
    """Make a plain-TCP asyncio transport keep kernel stamps for :func:`take_read_stamp`.

    Relies on a private detail (``transport._sock`` is the socket it reads); anything unexpected
    (TLS, another transport class, a socket subclass) leaves the transport untouched and returns False.
    """
    sock = getattr(transport, "_sock", None)
    get_extra = getattr(transport, "get_extra_info", None)
    if type(sock) is not socket.socket or get_extra is None or get_extra("sslcontext") is not None:
        return False
    if sock.type != socket.SOCK_STREAM or not enable(sock):
        return False
    sock.__class__ = _StampingSocket
    return True


def take_read_stamp() -> int:
    """The kernel arrival stamp (CLOCK_REALTIME ns) of this thread's last stamped read, once; else 0."""
    k = getattr(_last, "wall_ns", 0)
    _last.wall_ns = 0
    return k
