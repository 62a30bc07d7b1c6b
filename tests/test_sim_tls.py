"""The simulator's own TLS layer (harness/simulator/tls.py) over real loopback sockets.

The witnesses are independent of our code: Python's ``ssl`` module (an ``SSLObject`` driven by hand,
so a test decides where TLS records and TCP segments begin and end, or an ``SSLSocket``) and the
``websockets`` sync client. They check what a TLS peer sees: records split anyhow across segments
and interleaved across connections decrypt to the right events, a failed or dropped handshake
closes the socket at once and frees it, large writes to a reader that stalls arrive whole and in
order, and a close ends with close_notify.
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import ssl
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from harness.simulator import start_simulator
from harness.tlsconf import self_signed, server_context
from simclient import sim_url

BURST = {"audio_pace": {"dist": "fixed", "value": 100.0}}  # a reply's ~290 KB in a fraction of a second


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def sim(pki):
    with start_simulator("ideal", ssl_context=server_context(pki.cert, pki.key), overrides=BURST) as s:
        yield s


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (RFC 6455 §5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    head = struct.pack("!BB", 0x80 | opcode, 0x80 | n) if n < 126 else \
        struct.pack("!BBH", 0x80 | opcode, 0xFE, n) if n < 65536 else struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def event(kind: str, **fields: Any) -> bytes:
    return ws_frame(json.dumps({"type": kind, **fields}).encode())


class BioClient:
    """A TLS client on a raw TCP socket, TLS by ``ssl.SSLObject``: the test chooses every segment."""

    def __init__(self, port: int, ca: str, *, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ssl.create_default_context(cafile=ca).wrap_bio(self.inc, self.out, server_hostname="localhost")
        self.plain = bytearray()
        self.eof = False

    def handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.out.read())
                data = self.sock.recv(65536)
                assert data, "server closed during the handshake"
                self.inc.write(data)
        self.sock.sendall(self.out.read())

    def records(self, *messages: bytes) -> bytes:
        """One TLS record (or more, past 16 KB) per message, concatenated, not sent."""
        for m in messages:
            self.obj.write(m)
        return self.out.read()

    def pump(self, deadline: float) -> None:
        """Decrypt one TCP read into ``plain`` (``eof`` on close_notify or TCP EOF)."""
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            return
        self.inc.write(data)
        try:
            while True:
                chunk = self.obj.read(65536)
                if not chunk:
                    self.eof = True
                    return
                self.plain += chunk
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self.eof = True

    def upgrade(self, url: str) -> None:
        path = sim_url("").encode()
        self.sock.sendall(self.records(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                                       b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                       b"Sec-WebSocket-Version: 13\r\n\r\n"))
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in self.plain and not self.eof and time.monotonic() < deadline:
            self.pump(deadline)
        head, _, rest = bytes(self.plain).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.plain = bytearray(rest)

    def next_frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame."""
        deadline = time.monotonic() + timeout
        while True:
            p = self.plain
            if len(p) >= 2:
                n, h = p[1] & 0x7F, 2
                if n == 126 and len(p) >= 4:
                    n, h = struct.unpack_from("!H", p, 2)[0], 4
                elif n == 127 and len(p) >= 10:
                    n, h = struct.unpack_from("!Q", p, 2)[0], 10
                if n < 126 or h > 2:
                    if len(p) >= h + n:
                        frame = (p[0] & 0x0F, bytes(p[h:h + n]))
                        del p[:h + n]
                        return frame
            assert not self.eof and time.monotonic() < deadline, "no whole frame before EOF / timeout"
            self.pump(deadline)

    def next_event(self, timeout: float = 10.0) -> dict[str, Any]:
        opcode, payload = self.next_frame(timeout)
        assert opcode == 0x1, (opcode, payload[:80])
        return json.loads(payload)

    def close(self) -> None:
        self.sock.close()


def socket_fds() -> int:
    """Sockets this process holds open (the simulator runs in a thread of it)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def wait_until(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_many_clients_with_partial_records_interleaved_across_connections(sim, pki):
    """12 clients at once send their records in random slices of 1-40 bytes, two whole messages
    ending in one slice now and then; every session answers every message, in order."""
    port, errors, answered = _port(sim.url), [], []

    def client(i: int) -> None:
        rng = random.Random(i)
        c = BioClient(port, pki.ca)
        try:
            c.handshake()
            c.upgrade(sim.url)
            assert c.next_event()["type"] == "session.created"
            wire = c.records(event("session.update", session={"instructions": f"client {i} " + "y" * rng.randrange(2000)}),
                             event("conversation.item.create", item={"type": "message", "role": "user",
                                                                     "content": [{"type": "input_text", "text": f"hi {i}"}]}))
            p = 0
            while p < len(wire):
                n = rng.randrange(1, 41)
                c.sock.sendall(wire[p:p + n])
                p += n
                time.sleep(rng.random() * 0.002)
            updated = c.next_event()
            assert updated["type"] == "session.updated" and updated["session"]["instructions"].startswith(f"client {i} ")
            created = c.next_event()
            assert created["type"] == "conversation.item.created", created
            assert created["item"]["content"][0]["text"] == f"hi {i}"
            answered.append(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append((i, exc))
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(answered) == list(range(12))


def test_records_in_one_segment_and_one_record_over_many_delayed_segments(sim, pki):
    """Two messages' records in one TCP segment are both decrypted on that read (nothing waits for
    the next read); a 20 KB message (two records) sent 97 bytes at a time, 2 ms apart, arrives whole,
    and so does a 200 KB one sent at once."""
    c = BioClient(_port(sim.url), pki.ca)
    try:
        c.handshake()
        c.upgrade(sim.url)
        assert c.next_event()["type"] == "session.created"
        c.sock.sendall(c.records(event("session.update", session={"instructions": "one"}),
                                 event("session.update", session={"instructions": "two"})))
        assert [c.next_event(5)["session"]["instructions"] for _ in range(2)] == ["one", "two"]
        text = "".join(random.Random(3).choice("abcdefgh") for _ in range(20_000))
        wire = c.records(event("session.update", session={"instructions": text}))
        assert len(wire) > 20_000
        for p in range(0, len(wire), 97):
            c.sock.sendall(wire[p:p + 97])
            time.sleep(0.002)
        assert c.next_event()["session"]["instructions"] == text
        big = text * 10  # 200 KB in one write: more than one read of the TCP socket (kstamp.READ_CAP)
        c.sock.sendall(c.records(event("session.update", session={"instructions": big})))
        assert c.next_event()["session"]["instructions"] == big
    finally:
        c.close()


@pytest.mark.parametrize("how", ["connect_and_close", "half_client_hello", "client_hello_then_close",
                                 "plain_http", "client_rejects_certificate"])
def test_a_failed_or_dropped_handshake_closes_and_frees_the_socket(sim, pki, tmp_path, how):
    """The server hangs up on bytes that are not TLS at once (not after the 30 s open timeout), and
    every socket of a dropped or failed handshake is released; the server still serves afterwards."""
    port = _port(sim.url)
    with connect(sim_url(sim.url), ssl=ssl.create_default_context(cafile=pki.ca), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
    assert wait_until(lambda: sim.simulator.sessions_active == 0)
    baseline = socket_fds()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if how in ("half_client_hello", "client_hello_then_close"):
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = ssl.create_default_context(cafile=pki.ca).wrap_bio(inc, out, server_hostname="localhost")
            with pytest.raises(ssl.SSLWantReadError):
                obj.do_handshake()
            hello = out.read()
            sock.sendall(hello[:len(hello) // 2] if how == "half_client_hello" else hello)
            if how == "client_hello_then_close":
                assert sock.recv(65536)  # the server's flight: the handshake was under way
        elif how == "plain_http":
            sock.sendall(b"GET /voice-live/realtime HTTP/1.1\r\nHost: localhost\r\n\r\n")
            t0 = time.monotonic()
            try:
                data = sock.recv(65536)
                while data:
                    data = sock.recv(65536)
            except ConnectionResetError:
                pass
            assert time.monotonic() - t0 < 8  # hung up on, not left to the open timeout
        elif how == "client_rejects_certificate":
            other = self_signed(tmp_path / "other")
            with pytest.raises(ssl.SSLCertVerificationError):
                ssl.create_default_context(cafile=other.ca).wrap_socket(sock, server_hostname="localhost")
    finally:
        sock.close()
    assert wait_until(lambda: socket_fds() <= baseline), (socket_fds(), baseline)
    assert sim.simulator.sessions_active == 0 and sim.simulator.sessions_total == 1
    with connect(sim_url(sim.url), ssl=ssl.create_default_context(cafile=pki.ca), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"


def test_large_writes_to_a_reader_that_stalls_arrive_whole_and_in_order(sim, pki):
    """A ~290 KB reply written at once to a client that stops reading (small kernel buffers both
    sides): the server's TCP transport buffers it (send() would block), then every event arrives intact."""
    c = BioClient(_port(sim.url), pki.ca, rcvbuf=4096)
    try:
        c.handshake()
        c.upgrade(sim.url)
        assert c.next_event()["type"] == "session.created"
        conns = sim.simulator._server.all_connections  # the websockets server's (one connection here)
        for ws in list(conns):  # loopback autotunes it to MBs: make the kernel take only a few KB
            ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        c.sock.sendall(c.records(event("response.create")))
        assert wait_until(lambda: any(ws.transport.get_write_buffer_size() > 0 for ws in list(conns))), \
            "the reply never backed up in the server"
        time.sleep(0.3)  # stalled a while longer
        types, audio = [], 0
        while not types or types[-1] != "response.done":
            e = c.next_event()
            types.append(e["type"])
            if e["type"] == "response.audio.delta":
                audio += len(base64.b64decode(e["delta"], validate=True))
        assert types[0] == "response.created" and "response.audio.done" in types
        assert e["response"]["status"] == "completed"
        assert audio > 100_000
    finally:
        c.close()


def test_close_handshake_ends_with_close_notify(sim, pki):
    """Client close frame -> server close frame, then TLS close_notify (a clean end of the TLS
    stream: with ragged EOFs not suppressed, a bare TCP FIN would raise SSLEOFError)."""
    ctx = ssl.create_default_context(cafile=pki.ca)
    raw = socket.create_connection(("127.0.0.1", _port(sim.url)), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    try:
        s.sendall(b"GET " + sim_url("").encode() + b" HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\n")
        got = b""
        while b"response.created" not in got and b"session.created" not in got:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
        assert got.startswith(b"HTTP/1.1 101")
        s.sendall(ws_frame(struct.pack("!H", 1000) + b"bye", opcode=0x8))
        rest = b""
        while True:
            chunk = s.recv(65536)  # SSLEOFError here if the server closed TCP without close_notify
            if not chunk:
                break
            rest += chunk
        assert rest.endswith(b"\x88\x05\x03\xe8bye"), rest[-8:]  # the server's close frame (1000 echoed), last
    finally:
        s.close()
    assert wait_until(lambda: sim.simulator.sessions_active == 0)


@pytest.mark.serial  # the control turn needs a simulator that keeps up (its appends read one by one)
def test_a_speech_end_read_late_with_later_audio_is_flagged_and_left_out_of_the_comparison(pki, tmp_path):
    """Turn 1: the simulator's loop is held for 150 ms around the speech end while the client keeps
    streaming in real time, so those appends reach it in one read and its stamp (the read's last
    segment) is late: the truth says so (speech_end_recv_shared) and accuracy.compare leaves the turn
    out rather than call it a harness error. Turn 2, not held: exact (within loopback), compared."""
    from harness import audio, fixtures
    from harness.accuracy import compare, inexact_truth
    from harness.protocol import events as ev
    from harness.simulator.truth import read_truth

    truth_path = tmp_path / "truth.jsonl"
    fmt = audio.input_format()
    fs = fixtures.frames("cs_order_status", fmt, 20)
    quiet = fixtures.silence_frames(fmt, 20, count=50)
    with start_simulator("ideal", truth_log=str(truth_path), ssl_context=server_context(pki.cert, pki.key)) as s:
        c = BioClient(_port(s.url), pki.ca)
        try:
            c.handshake()
            c.upgrade(s.url)
            assert c.next_event()["type"] == "session.created"
            c.sock.sendall(c.records(event("session.update", session={"turn_detection": {
                "type": "server_vad", "silence_duration_ms": 400}})))
            assert c.next_event()["type"] == "session.updated"
            sent: list[tuple[float, int]] = []  # (buffer end ms, monotonic ns sent)
            position, t0 = 0.0, time.monotonic()
            for turn in (0, 1):
                start, hold = position, turn == 0
                for frame in fs.frames + quiet:
                    if hold and position - start >= fs.speech_end_ms - 60:
                        s.loop.call_soon_threadsafe(time.sleep, 0.15)  # the simulator falls behind
                        hold = False
                    c.sock.sendall(c.records(ws_frame(ev.append_message(frame))))
                    position += 20
                    sent.append((position, time.monotonic_ns()))
                    delay = t0 + position / 1000 - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            responses: list[str] = []
            while len(responses) < 2:
                e = c.next_event()
                if e["type"] == "response.audio.delta" and e["response_id"] not in responses:
                    responses.append(e["response_id"])
        finally:
            c.close()
        assert wait_until(lambda: len(read_truth(truth_path)) >= 2)
    truth = {t["response_id"]: t for t in read_truth(truth_path)}

    def sent_at(ms: float) -> int:
        end, at = next((e, a) for e, a in sent if e + 1e-6 >= ms)
        return at - int((end - ms) * 1e6)

    late = {rid: (truth[rid]["speech_end_recv_mono_ns"] - sent_at(truth[rid]["speech_end_audio_ms"])) / 1e6
            for rid in responses}
    held, control = responses
    assert truth[held]["speech_end_recv_shared"] and late[held] >= 40, (late, truth[held])
    assert not truth[control]["speech_end_recv_shared"] and abs(late[control]) < 10, (late, truth[control])
    # as a stopwatch that is exact would record them (this client reads events only after streaming)
    recs = [{"response_id": rid, "speech_end_audio_ms": truth[rid]["speech_end_audio_ms"],
             "first_audio_ms": truth[rid]["first_audio_ms_truth"] + late[rid]} for rid in responses]
    cmp = compare(recs, list(truth.values()))
    assert [c.response_id for c in cmp] == [control] and inexact_truth(recs, list(truth.values())) == 1
    assert cmp[0].error_ms == pytest.approx(late[control], abs=1e-6)  # loopback: what a harness would see
