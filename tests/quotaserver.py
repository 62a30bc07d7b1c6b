"""A plain loopback Voice Live stand-in that enforces quotas the way Azure documents them (not our simulator).

* at most ``connections`` new WebSocket connections in any rolling ``window_s``: beyond that the
  upgrade is answered ``429 Too Many Requests`` with ``Retry-After``, and counted in ``refused``;
* optionally ``tokens`` per rolling window, counted from audio (10 tokens per second in, 20 out,
  the pricing page's estimate): beyond that an ``error`` event and a close, like the TPM limit;
* push-to-talk turns only: ``input_audio_buffer.commit`` + ``response.create`` get a short voiced
  reply, which is all a caller needs to complete a turn.

Real OS threads and blocking sockets (faultserver.RawServer), so it serves callers in a subprocess
(``voiceload run``, Locust) while the test process just waits. Binds 127.0.0.1 on an ephemeral port;
every loop is bounded in time; stops when the ``with`` block ends.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from typing import Any

import orjson
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.datastructures import Headers
from websockets.server import ServerProtocol

import faultserver as fs
from harness.protocol import events as ev

READ = 65536
PCM16_24K_BYTES_PER_S = 48000


REPLY = fs.AUDIO_100MS  # a voiced 100 ms reply: all a caller needs to complete a turn
REPLY_S = 0.1


def max_in_window(times: list[float], window_s: float) -> int:
    """The most instants any rolling window of ``window_s`` holds."""
    t = sorted(times)
    j, best = 0, 0
    for i in range(len(t)):
        while t[i] - t[j] >= window_s:
            j += 1
        best = max(best, i - j + 1)
    return best


class QuotaServer:
    def __init__(self, connections: int | None, window_s: float, *, tokens: float | None = None,
                 retry_after_s: float = 1.0) -> None:
        self.connections, self.window_s, self.tokens = connections, window_s, tokens
        self.retry_after_s = retry_after_s
        self.lock = threading.Lock()
        self.accepted: list[float] = []  # monotonic instants of accepted upgrades
        self.refused: list[float] = []
        self.token_log: collections.deque[tuple[float, float]] = collections.deque()
        self.tpm_errors = 0
        self.turns = 0
        self.errors: list[str] = []
        self._raw = fs.RawServer(lambda sock, _stop: self._serve(sock))  # threads, blocking sockets
        self.stop = self._raw.stop

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._raw.port}"

    def max_in_window(self) -> int:
        """The most accepted connections any rolling window held (the quota must bound it)."""
        return max_in_window(self.accepted, self.window_s)

    # -- quota bookkeeping ----------------------------------------------------------------------------
    def _admit(self) -> bool:
        now = time.monotonic()
        with self.lock:
            recent = [t for t in self.accepted if now - t < self.window_s]
            if self.connections is not None and len(recent) >= self.connections:
                self.refused.append(now)
                return False
            self.accepted.append(now)
            return True

    def _spend(self, tokens: float) -> bool:
        """Count tokens; False once the rolling window holds more than the quota."""
        if self.tokens is None:
            return True
        now = time.monotonic()
        with self.lock:
            self.token_log.append((now, tokens))
            while self.token_log and now - self.token_log[0][0] >= self.window_s:
                self.token_log.popleft()
            return sum(n for _, n in self.token_log) <= self.tokens

    # -- serving ------------------------------------------------------------------------------------------
    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(30)
        proto = ServerProtocol()
        try:
            with sock:
                if not self._handshake(sock, proto):
                    return
                self._session(sock, proto)
        except (OSError, ValueError) as exc:
            if not isinstance(exc, (ConnectionError, socket.timeout)):
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _flush(self, sock: socket.socket, proto: ServerProtocol) -> None:
        for chunk in proto.data_to_send():
            if chunk:
                sock.sendall(chunk)

    def _handshake(self, sock: socket.socket, proto: ServerProtocol) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = sock.recv(READ)
            if not data:
                return False
            proto.receive_data(data)
            for event in proto.events_received():
                if isinstance(event, Request):
                    if self._admit():
                        proto.send_response(proto.accept(event))
                        self._flush(sock, proto)
                        return True
                    body = b'{"error":{"code":"429","message":"Rate limit of new connections per minute exceeded."}}'
                    headers = Headers([("Retry-After", f"{self.retry_after_s:g}"), ("Content-Type", "application/json"),
                                       ("Content-Length", str(len(body)))])
                    proto.send_response(Response(429, "Too Many Requests", headers, body))
                    self._flush(sock, proto)
                    return False
        return False

    def _session(self, sock: socket.socket, proto: ServerProtocol) -> None:
        def send(event: dict[str, Any]) -> None:
            proto.send_text(orjson.dumps(event))
            self._flush(sock, proto)

        send(ev.server_event(ev.SESSION_CREATED, session={"id": f"sess_{id(sock)}", "object": "realtime.session"}))
        n, appended = 0, 0
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            data = sock.recv(READ)
            if not data:
                return
            proto.receive_data(data)
            for frame in proto.events_received():
                if not isinstance(frame, Frame):
                    continue
                if frame.opcode is Opcode.CLOSE:
                    self._flush(sock, proto)
                    return
                if frame.opcode is not Opcode.TEXT:
                    continue
                event = orjson.loads(frame.data)
                etype = event.get("type")
                if etype == ev.INPUT_AUDIO_APPEND:
                    appended += len(event.get("audio", "")) * 3 // 4
                elif etype == ev.SESSION_UPDATE:
                    send(ev.server_event(ev.SESSION_UPDATED, session={"id": "s", "modalities": ["text", "audio"],
                                                                      "output_audio_format": "pcm16"}))
                elif etype == ev.INPUT_AUDIO_COMMIT:
                    n += 1
                    send(ev.server_event(ev.COMMITTED, item_id=f"item_{n}"))
                elif etype == ev.RESPONSE_CREATE:
                    spent = 10 * appended / PCM16_24K_BYTES_PER_S + 20 * REPLY_S
                    appended = 0
                    if not self._spend(spent):
                        with self.lock:
                            self.tpm_errors += 1
                        send(ev.server_event(ev.ERROR, error={
                            "type": "rate_limit_error", "code": "rate_limit_exceeded",
                            "message": "Requests to the Voice Live API have exceeded the token rate limit "
                                       "(tokens per minute) of your current pricing tier. Please retry after "
                                       f"{self.retry_after_s:g} seconds."}))
                        proto.send_close(1008, "token rate limit exceeded")
                        self._flush(sock, proto)
                        return
                    rid = f"resp_{n}"
                    send(ev.server_event(ev.RESPONSE_CREATED, response=ev.response_object(rid)))
                    send(ev.server_event(ev.OUTPUT_ITEM_ADDED, response_id=rid, output_index=0,
                                         item={"id": f"out_{rid}", "type": "message", "role": "assistant"}))
                    send(ev.server_event(ev.AUDIO_DELTA, response_id=rid, item_id=f"out_{rid}", output_index=0,
                                         content_index=0, delta=REPLY))
                    send(ev.server_event(ev.RESPONSE_DONE, response=ev.response_object(rid, status="completed")))
                    with self.lock:
                        self.turns += 1

    def __enter__(self) -> "QuotaServer":
        self._raw.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.__exit__(*exc)
