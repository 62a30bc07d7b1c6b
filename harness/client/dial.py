"""Opening a WebSocket to a target: TCP (with kernel receive stamps), TLS (sans-I/O), the upgrade.

Apart from transport.py, which drives the open connection: what can go wrong while dialling has
its own error type (:class:`ConnectError`, by kind) that retries and the report classify.
"""

from __future__ import annotations

import os
import socket as _stdsocket
import ssl
import time
from typing import NamedTuple

from gevent import socket
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame
from websockets.http11 import Response

from .. import kstamp, tlsconf
from .tlsio import TlsSocket, handshake as tls_handshake

# 64 KB, not more: CPython allocates the full size per recv() and larger blocks go through
# mmap/munmap, which cost ~9 µs per read (measured); websockets reassembles bigger messages anyway.
READ_SIZE = 65536


class ConnectError(Exception):
    """The connection could not be opened (DNS, TCP, TLS, timeout, or a refused handshake)."""

    def __init__(self, kind: str, message: str, *, status: int | None = None,
                 headers: dict[str, str] | None = None, body: bytes = b""):
        super().__init__(message)
        self.kind = kind  # dns | tcp | tls | timeout | handshake | protocol
        self.status = status
        self.headers = headers or {}
        self.body = body

    @property
    def retry_after_s(self) -> float | None:
        value = self.headers.get("retry-after")
        try:
            return max(0.0, float(value)) if value is not None else None
        except ValueError:
            return None


_DEFAULT_CTX: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def _default_ssl_context() -> ssl.SSLContext:
    """The system trust store, verifying certificates and host names; built once per SSL_CERT_FILE/
    SSL_CERT_DIR setting (loading the store costs milliseconds, too much per connect at 100/s).
    The handshake runs sans-I/O over gevent's socket (tlsio.py): cooperative, patched or not."""
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    ctx = _DEFAULT_CTX.get(key)
    if ctx is None:
        ctx = _DEFAULT_CTX[key] = tlsconf.client_context()
    return ctx


def _open_socket(host: str, port: int, secure: bool, ctx: ssl.SSLContext | None,
                 kernel_stamps: bool) -> tuple[socket.socket | TlsSocket, bool]:
    """The connected (and TLS-wrapped) socket, and whether its reads carry kernel stamps (over
    TLS too: the records are read from the TCP socket by us, tlsio.py)."""
    try:
        infos = socket.getaddrinfo(host, port, type=_stdsocket.SOCK_STREAM)
    except _stdsocket.gaierror as exc:
        raise ConnectError("dns", f"cannot resolve {host}: {exc.strerror or exc}") from None
    last: Exception | None = None
    for family, stype, proto, _canon, addr in infos:
        sock = socket.socket(family, stype, proto)
        try:
            sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            stamped = kernel_stamps and kstamp.enable(sock)
            sock.connect(addr)
            break
        except OSError as exc:
            last = exc
            sock.close()
    else:
        raise ConnectError("tcp", f"cannot connect to {host}:{port}: {last}") from None
    if secure:
        ctx = ctx or _default_ssl_context()
        try:
            return tls_handshake(sock, ctx, host), stamped
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise ConnectError("tls", f"TLS handshake with {host} failed: {exc} (a private CA goes in "
                               "target.ca_file)") from None
        except (ssl.SSLError, OSError, EOFError) as exc:
            sock.close()
            raise ConnectError("tls", f"TLS handshake with {host} failed: {exc}") from None
    return sock, stamped


def _handshake(sock: socket.socket, proto: ClientProtocol, headers: dict[str, str]) -> tuple[list[Frame], int]:
    request = proto.connect()
    for name, value in headers.items():
        request.headers[name] = value
    proto.send_request(request)
    for chunk in proto.data_to_send():
        sock.sendall(chunk)
    while True:
        data = sock.recv(READ_SIZE)
        t = time.monotonic_ns()
        if not data:
            proto.receive_eof()
            raise ConnectError("protocol", "connection closed during the WebSocket handshake")
        proto.receive_data(data)
        events = proto.events_received()
        for i, event in enumerate(events):
            if isinstance(event, Response):
                exc = proto.handshake_exc
                if exc is not None:
                    status = event.status_code
                    hdrs = {k.lower(): v for k, v in Headers(event.headers).raw_items()}
                    kind = "handshake" if isinstance(exc, InvalidStatus) else "protocol"
                    raise ConnectError(kind, f"handshake refused: HTTP {status} {event.reason_phrase}"
                                       if kind == "handshake" else f"invalid handshake: {exc}",
                                       status=status, headers=hdrs, body=event.body or b"")
                # Frames that came in the same read as the 101 response belong to the reader.
                return [e for e in events[i + 1:] if isinstance(e, Frame)], t
        if proto.handshake_exc is not None:
            raise ConnectError("protocol", f"invalid handshake: {proto.handshake_exc}")


class Dialled(NamedTuple):
    """An open WebSocket, upgraded, handed to the transport that drives it."""

    sock: socket.socket | TlsSocket
    kernel_stamps: bool  # its reads carry kernel receive stamps
    early: list[Frame]  # frames that came in the same read as the 101 response
    early_ns: int  # when that read returned (monotonic)


def dial(host: str, port: int, secure: bool, proto: ClientProtocol, headers: dict[str, str], *,
         ssl_context: ssl.SSLContext | None = None, kernel_stamps: bool = False) -> Dialled:
    """TCP (kernel stamps if asked and available), TLS for ``secure``, then the upgrade with
    ``headers``; the socket is closed if the upgrade fails. Raises :class:`ConnectError`."""
    sock, stamped = _open_socket(host, port, secure, ssl_context, kernel_stamps)
    try:
        early, early_ns = _handshake(sock, proto, headers)
    except BaseException:
        sock.close()
        raise
    return Dialled(sock, stamped, early, early_ns)
