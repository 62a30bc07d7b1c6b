"""Small loopback servers for faults the simulator does not model (reliability tests only).

* :class:`ScriptServer` — a WebSocket server (websockets' sans-I/O ``ServerProtocol`` over gevent
  sockets) that accepts the upgrade, speaks just enough Voice Live to get a caller into a turn, then
  runs a *script* (send garbage, binary frames, error events, a 32 MiB message, a flood, close with a
  given code, abort the TCP connection...).
* :class:`RawServer` — a TCP listener (real threads, blocking stdlib sockets) whose handler gets the
  accepted socket: never answer, answer with plain HTTP, close at once, or serve TLS with a
  self-signed certificate.

ScriptServer runs on gevent in the test process, so it shares one hub and one clock with the
callers; nothing here is fast or faithful, it only has to misbehave precisely. Every loop is bounded
in count and time; servers bind 127.0.0.1 only and stop when the ``with`` block ends.
"""

from __future__ import annotations

import base64
import datetime as dt
import socket as stdsocket
import ssl as stdssl
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable

import gevent
import gevent.event
import gevent.lock
import orjson
from gevent import socket
from gevent.server import StreamServer
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from harness.protocol import events as ev

READ_SIZE = 65536


class Conn:
    """One accepted WebSocket connection as seen by a script."""

    def __init__(self, sock: socket.socket, max_size: int | None = None) -> None:
        self.sock = sock
        self.proto = ServerProtocol(max_size=max_size)
        self.lock = gevent.lock.Semaphore()
        self.received: list[dict[str, Any]] = []
        self.speech = gevent.event.Event()  # set at the first append carrying non-zero audio
        self.updated = gevent.event.Event()
        self.update_event_id: str | None = None
        self.closed = gevent.event.Event()
        self.close_code: int | None = None  # what the client sent us
        self.appends = 0
        self.reading = True
        self.deaf = False
        self._reader: gevent.Greenlet | None = None

    # -- handshake ----------------------------------------------------------------------------------
    def accept(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with gevent.Timeout(max(0.01, deadline - time.monotonic()), False):
                data = self.sock.recv(READ_SIZE)
                if not data:
                    return False
                self.proto.receive_data(data)
                for event in self.proto.events_received():
                    if isinstance(event, Request):
                        self.proto.send_response(self.proto.accept(event))
                        self._flush()
                        self._reader = gevent.spawn(self._read_loop)
                        return True
        return False

    # -- sending -----------------------------------------------------------------------------------
    def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            if chunk:
                self.sock.sendall(chunk)
            else:
                try:
                    self.sock.shutdown(stdsocket.SHUT_WR)
                except OSError:
                    pass

    def send(self, event: dict[str, Any]) -> None:
        self.send_text(orjson.dumps(event))

    def send_text(self, data: bytes) -> None:
        with self.lock:
            self.proto.send_text(data)
            self._flush()

    def send_binary(self, data: bytes) -> None:
        with self.lock:
            self.proto.send_binary(data)
            self._flush()

    def send_frame_raw(self, opcode: int, payload: bytes) -> None:
        """An unmasked frame built by hand (bypasses the protocol's size and state checks)."""
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        with self.lock:
            self.sock.sendall(head + payload)

    def close(self, code: int, reason: str = "") -> None:
        with self.lock:
            try:
                self.proto.send_close(code, reason)
                self._flush()
            except Exception:
                pass

    def abort(self) -> None:
        """TCP reset: no close frame."""
        try:
            self.sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()
        self.closed.set()

    # -- receiving ---------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        try:
            while True:
                if not self.reading:
                    gevent.sleep(0.05)
                    continue
                data = self.sock.recv(READ_SIZE)
                if not data:
                    self.proto.receive_eof()
                    break
                self.proto.receive_data(data)
                for event in self.proto.events_received():
                    if isinstance(event, Frame):
                        self._on_frame(event)
                with self.lock:
                    self._flush()
                if self.proto.state.name == "CLOSED":
                    break
        except OSError:
            pass
        finally:
            if not self.deaf:
                rcvd = self.proto.close_rcvd
                self.close_code = rcvd.code if rcvd else None
                self.closed.set()
                try:
                    self.sock.close()
                except OSError:
                    pass

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is not Opcode.TEXT:
            return
        try:
            event = orjson.loads(frame.data)
        except orjson.JSONDecodeError:
            return
        etype = event.get("type")
        if etype == ev.INPUT_AUDIO_APPEND:
            self.appends += 1
            if not self.speech.is_set():
                pcm = base64.b64decode(event.get("audio", ""))
                if any(pcm):
                    self.speech.set()
            return
        self.received.append(event)
        if etype == ev.SESSION_UPDATE:
            self.update_event_id = event.get("event_id")
            self.updated.set()

    # -- Voice Live, just enough ---------------------------------------------------------------------
    def open_session(self, timeout: float = 5.0, reply_updated: bool = True) -> bool:
        """session.created, wait for session.update, answer session.updated."""
        self.send(ev.server_event(ev.SESSION_CREATED, session={"id": "sess_fault", "object": "realtime.session"}))
        if not self.updated.wait(timeout):
            return False
        if reply_updated:
            self.send(ev.server_event(ev.SESSION_UPDATED, session={"id": "sess_fault", "modalities": ["text", "audio"],
                                                                   "output_audio_format": "pcm16"}))
        return True

    def wait_speech(self, timeout: float = 5.0, settle: float = 0.15) -> bool:
        """The caller has started its utterance (and had time to register the turn)."""
        ok = self.speech.wait(timeout)
        gevent.sleep(settle)
        return bool(ok)

    def speech_detected(self, item: str = "item_u1") -> None:
        self.send(ev.server_event(ev.SPEECH_STARTED, item_id=item, audio_start_ms=100))

    def response_started(self, rid: str = "resp_1", item: str = "item_u1", deltas: int = 1) -> None:
        self.send(ev.server_event(ev.SPEECH_STOPPED, item_id=item, audio_end_ms=900))
        self.send(ev.server_event(ev.COMMITTED, item_id=item))
        self.send(ev.server_event(ev.RESPONSE_CREATED, response=ev.response_object(rid)))
        self.send(ev.server_event(ev.OUTPUT_ITEM_ADDED, response_id=rid, output_index=0,
                                  item={"id": f"out_{rid}", "type": "message", "role": "assistant"}))
        for _ in range(deltas):
            self.send(ev.server_event(ev.AUDIO_DELTA, response_id=rid, item_id=f"out_{rid}", output_index=0,
                                      content_index=0, delta=AUDIO_100MS))

    def response_done(self, rid: str = "resp_1", status: str = "completed") -> None:
        self.send(ev.server_event(ev.RESPONSE_DONE, response=ev.response_object(rid, status=status)))

    def complete_turn(self, rid: str = "resp_1", item: str = "item_u1") -> None:
        self.speech_detected(item)
        self.response_started(rid, item)
        self.response_done(rid)

    def go_deaf(self) -> None:
        """Stop reading for good: close frames are never answered, TCP stays open."""
        self.deaf = True
        if self._reader is not None:
            self._reader.kill(block=False)

    def linger(self, timeout: float = 15.0) -> None:
        """Keep the connection served (close replies, reads) until the client goes away."""
        self.closed.wait(timeout)


# 100 ms of a 440 Hz tone, pcm16 24 kHz: a voiced delta.
def _tone(ms: int) -> str:
    import math

    n = 24 * ms
    pcm = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 24000))) for i in range(n))
    return base64.b64encode(pcm).decode()


AUDIO_100MS = _tone(100)

Script = Callable[[Conn], None]


class ScriptServer:
    """A loopback WebSocket server running ``script(conn)`` for every accepted connection."""

    def __init__(self, script: Script, *, path: str = "/voice-live/realtime", max_size: int | None = None,
                 conn_class: type[Conn] = Conn) -> None:
        self.script = script
        self.conn_class = conn_class
        self.path = path
        self.max_size = max_size
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.connections = 0
        self.errors: list[str] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.server_port}{self.path}?api-version=2026-07-15&model=gpt-realtime"

    def _handle(self, sock: socket.socket, _addr: Any) -> None:
        self.connections += 1
        sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, 1)
        conn = self.conn_class(sock, self.max_size)
        try:
            with gevent.Timeout(30, False):  # no script outlives half a minute
                if conn.accept():
                    self.script(conn)
                    conn.linger(10.0)
        except Exception as exc:  # a broken pipe is the client's right; record anything else
            if not isinstance(exc, OSError):
                self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def __enter__(self) -> "ScriptServer":
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(timeout=1)


class RawServer:
    """A loopback TCP listener served by real OS threads with blocking stdlib sockets.

    Threads, not greenlets: the server must keep answering even if the caller blocks the gevent hub
    (a TLS handshake on a blocking stdlib ``SSLSocket`` does exactly that), or the test would
    deadlock instead of showing the fault. ``handler(sock, stop)`` runs per connection; ``stop`` is
    set when the ``with`` block ends. ``tls_delay_s`` holds the TLS handshake back that long.
    """

    def __init__(self, handler: Callable[[Any, threading.Event], None], *, ssl_files: tuple[str, str] | None = None,
                 tls_delay_s: float = 0.0) -> None:
        self.handler = handler
        self.ssl_files = ssl_files
        self.tls_delay_s = tls_delay_s
        self.stop = threading.Event()
        self.connections = 0
        self._lsock = stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_STREAM)
        self._lsock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(64)
        self._lsock.settimeout(0.1)
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self._lsock.getsockname()[1]

    def url(self, scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/voice-live/realtime?api-version=2026-07-15&model=gpt-realtime"

    def _accept_loop(self) -> None:
        deadline = time.monotonic() + 120  # bounded even if nobody stops us
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self._lsock.accept()
            except (TimeoutError, stdsocket.timeout):
                continue
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _handle(self, conn: Any) -> None:
        conn.settimeout(30)
        try:
            if self.ssl_files:
                if self.tls_delay_s:
                    self.stop.wait(self.tls_delay_s)
                ctx = stdssl.SSLContext(stdssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(*self.ssl_files)
                try:
                    conn = ctx.wrap_socket(conn, server_side=True)
                except (stdssl.SSLError, OSError):
                    return  # the client refused our certificate: that is the point
            self.handler(conn, self.stop)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def __enter__(self) -> "RawServer":
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(2)
        self._lsock.close()


# -- raw handlers (sock, stop) ----------------------------------------------------------------------------

def never_answer(sock: Any, stop: threading.Event) -> None:
    """Accept TCP, read the upgrade request, never answer (until the server stops, at most 20 s)."""
    stop.wait(20)


def plain_http(sock: Any, stop: threading.Event) -> None:
    """What a plain HTTP server says to a TLS ClientHello or a WebSocket upgrade."""
    sock.recv(READ_SIZE)
    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def http_200(sock: Any, stop: threading.Event) -> None:
    """An ordinary web page where the WebSocket upgrade should be."""
    sock.recv(READ_SIZE)
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello")
    stop.wait(2)


def close_at_once(sock: Any, stop: threading.Event) -> None:
    sock.recv(READ_SIZE)


def _accept_upgrade(sock: Any) -> bool:
    """Answer a WebSocket upgrade on a blocking socket by hand; False if the client went away."""
    import hashlib

    request = b""
    while b"\r\n\r\n" not in request and len(request) < 65536:
        chunk = sock.recv(READ_SIZE)
        if not chunk:
            return False
        request += chunk
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    return True


def upgrade_then_speak_late(delay_s: float, text: bytes) -> Callable[[Any, threading.Event], None]:
    """A minimal WebSocket server: accept the upgrade, wait ``delay_s``, send one text frame."""
    def handler(sock: Any, stop: threading.Event) -> None:
        if not _accept_upgrade(sock):
            return
        stop.wait(delay_s)
        sock.sendall(struct.pack("!BB", 0x81, len(text)) + text)  # unmasked, final, < 126 bytes
        stop.wait(2)
    return handler


def upgrade_then_reset(sock: Any, stop: threading.Event) -> None:
    """Accept the upgrade, then reset the TCP connection (SO_LINGER 0): no close frame, no FIN."""
    if _accept_upgrade(sock):
        sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def self_signed_cert(directory: Path) -> tuple[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1 (cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voiceload-fault")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "fault-cert.pem", directory / "fault-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)
