"""One simulator connection: websockets' ServerConnection with stamped reads and a fast path for data frames.

Apart from server.py (which runs sessions on these connections) because it is the part that touches
the socket: kernel receive stamps, TLS (decrypted in the same read, tls.py) and the frame splitter.
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import DATA_OPCODES, Frame, Opcode
from websockets.protocol import State

from .. import kstamp
from ..histogram import MsHistogram
from .handshake import Handshake
from .tls import TlsTransport
from .wire import MESSAGE, FrameSplitter

log = logging.getLogger("voiceload.simulator")
MAX_MESSAGE = 16 * 1024 * 1024


class StampedConnection(ServerConnection):
    """Hands every complete data message to the session straight from ``data_received``.

    Bypassing websockets' receive queue (and one task wake-up per message) and, for plain data
    frames, its parser (wire.py) is what lets one core carry hundreds of sessions streaming 20 ms
    frames; it also stamps each message with the instant its bytes arrived. Control frames and
    fragments still take websockets' normal path. With ``ssl_context`` (wss://) each read is
    decrypted first and everything after that is the plain path (tls.py).
    """

    def __init__(self, *args: Any, kernel_stamps: bool = True, rx_delays: MsHistogram | None = None,
                 ssl_context: ssl.SSLContext | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx_mono = 0
        self._rx_wall = 0
        self._fragments: list[bytes] = []
        self._splitter: FrameSplitter | None = None
        self.verdict: Handshake | None = None
        self.on_lost: Any = None
        self.early: list[tuple[bytes, int, int]] = []  # messages that beat the handler to it
        self.on_message: Any = self._keep_early  # (data: bytes, mono_ns, wall_ns) -> None
        self.kernel_stamps = kernel_stamps  # receive stamps from SO_TIMESTAMPNS (plain TCP or TLS over it)
        self._stamp_fd = -1  # the TCP socket whose reads carry them
        self.rx_delays = rx_delays  # user-space stamp - kernel stamp, per read (the simulator's)
        self._ssl_context = ssl_context
        self._tls: TlsTransport | None = None

    def _keep_early(self, data: bytes, mono: int, wall: int) -> None:
        self.early.append((data, mono, wall))

    def connection_made(self, transport: Any) -> None:
        if self.kernel_stamps:  # the TCP transport's reads, TLS or not
            fd = kstamp.stamp_asyncio_reads(transport)
            self.kernel_stamps, self._stamp_fd = fd > 0, fd
        if self._ssl_context is not None:
            transport = self._tls = TlsTransport(transport, self._ssl_context)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        mono, wall = time.monotonic_ns(), time.time_ns()
        k = kstamp.take_read_stamp(self._stamp_fd) if self.kernel_stamps else 0
        if k and 0 <= wall - k < 10_000_000_000:
            # The kernel's arrival instant: the truth log's receive stamps then carry none of this
            # event loop's lag (p99 3 ms at 200 sessions), which would otherwise count as harness error.
            delay = wall - k
            if self.rx_delays is not None:
                self.rx_delays.add(delay / 1e6)
            mono, wall = mono - delay, k
        self._rx_mono, self._rx_wall = mono, wall
        tls = self._tls
        if tls is not None:
            try:
                plain = tls.decrypt(data)
            except ssl.SSLError as exc:  # a failed handshake or a bad record: nothing more to trust
                log.info("TLS error from %s: %s", tls.get_extra_info("peername"), exc)
                tls.abort()
                return
            if plain is None:  # close_notify: the end of the stream, as a TCP EOF is for ws://
                self.eof_received()
                tls.close()
                return
            if not plain:
                return
            data = plain
        splitter = self._splitter
        if splitter is None:
            # Fast path from the first bytes after the upgrade (websockets' reader holds none yet).
            if self.protocol.state is not State.OPEN or self.protocol.reader.buffer:
                super().data_received(data)
                return
            splitter = self._splitter = FrameSplitter(MAX_MESSAGE)
        if splitter.off or self.protocol.state is not State.OPEN:
            super().data_received(data)
            return
        for kind, payload in splitter.feed(data):
            if kind == MESSAGE and self.protocol.state is State.OPEN:
                self.on_message(payload, mono, wall)
            else:  # whole control frames / fragments: websockets' own handling
                super().data_received(payload)

    def process_event(self, event: Any) -> None:
        if not isinstance(event, Frame) or event.opcode not in DATA_OPCODES:
            super().process_event(event)
            return
        # Text and binary frames alike are JSON to the service (the SDK parses both): pass bytes on.
        if event.opcode is not Opcode.CONT:
            if event.fin:
                self.on_message(bytes(event.data), self._rx_mono, self._rx_wall)
                return
            self._fragments = [bytes(event.data)]
            return
        self._fragments.append(bytes(event.data))
        if event.fin:
            data, self._fragments = b"".join(self._fragments), []
            self.on_message(data, self._rx_mono, self._rx_wall)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.on_lost is not None:
            self.on_lost()
