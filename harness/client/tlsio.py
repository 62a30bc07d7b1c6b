"""TLS for the caller's transport, sans-I/O: an ``ssl.SSLObject`` over memory BIOs on the plain socket.

Why not ``ssl.SSLSocket`` (gevent's wrap_socket): the transport keeps reading the raw TCP socket
itself, so ``recvmsg`` still returns the kernel's ``SO_TIMESTAMPNS`` arrival stamp over wss://
(the stamp of the read that completed the TLS records, the same "last segment" rule as plain TCP),
and the send hot path stays one non-blocking ``send()`` of the encrypted bytes, no gevent wrapper.
The object quacks like the socket calls transport.py makes (sendall, recv, recvmsg, shutdown, close).
"""

from __future__ import annotations

import ssl

from gevent import socket

_WANT_READ = ssl.SSLWantReadError
_EOF = (ssl.SSLZeroReturnError, ssl.SSLEOFError)
READ_CHUNK = 65536


class TlsSocket:
    """A client TLS session over a connected gevent socket. Create with :func:`handshake`."""

    def __init__(self, sock: socket.socket, obj: ssl.SSLObject, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO) -> None:
        self.raw = sock  # the TCP socket: the transport's fast path writes encrypted bytes to it
        self.obj, self.incoming, self.outgoing = obj, incoming, outgoing
        self.encrypt_write, self.drain = obj.write, outgoing.read

    def encrypt(self, data: bytes) -> bytes:
        """``data`` as TLS records (one record per call for anything under 16 KB)."""
        self.encrypt_write(data)
        return self.drain()

    def sendall(self, data: bytes) -> None:
        self.raw.sendall(self.encrypt(data))

    def _decrypted(self) -> tuple[bytes, bool]:
        """Every plaintext byte the incoming records hold, and whether the peer closed TLS."""
        parts = []
        read = self.obj.read
        try:
            while True:
                chunk = read(READ_CHUNK)
                if not chunk:
                    return b"".join(parts), True
                parts.append(chunk)
        except _WANT_READ:
            return (parts[0] if len(parts) == 1 else b"".join(parts)), False
        except _EOF:
            return b"".join(parts), True

    def _after_read(self) -> None:
        """TLS 1.3 may answer a read (key update): those bytes go out at once."""
        if self.outgoing.pending:
            self.raw.sendall(self.drain())

    def recvmsg(self, bufsize: int, ancbufsize: int = 0) -> tuple[bytes, list, int, object]:
        """Plaintext with the ancillary data (kernel stamp) of the TCP read that completed it."""
        while True:
            data, anc, flags, addr = self.raw.recvmsg(bufsize, ancbufsize)
            if not data:
                return b"", anc, flags, addr
            self.incoming.write(data)
            plain, eof = self._decrypted()
            if self.outgoing.pending:
                self._after_read()
            if plain or eof:
                return plain, anc, flags, addr

    def recv(self, bufsize: int) -> bytes:
        return self.recvmsg(bufsize)[0]

    def shutdown(self, how: int) -> None:
        self.raw.shutdown(how)

    def close(self) -> None:
        self.raw.close()


def handshake(sock: socket.socket, ctx: ssl.SSLContext, host: str) -> TlsSocket:
    """Run the TLS handshake over ``sock`` (cooperatively); raises ssl.SSLError / OSError / EOFError."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=False, server_hostname=host)
    while True:
        try:
            obj.do_handshake()
            break
        except _WANT_READ:
            if outgoing.pending:
                sock.sendall(outgoing.read())
            data = sock.recv(READ_CHUNK)
            if not data:
                raise EOFError("connection closed during the TLS handshake")
            incoming.write(data)
    if outgoing.pending:
        sock.sendall(outgoing.read())
    return TlsSocket(sock, obj, incoming, outgoing)
