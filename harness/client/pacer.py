"""A microphone that keeps real time: frame k is due at t0 + (k+1)·chunk, never ``sleep(chunk)``.

A late frame is sent at once (catch-up), so the average rate stays exact; each send's lateness is
recorded so turns streamed while the generator was overloaded can be flagged instead of trusted.
Between utterances an open microphone keeps sending silence/room tone, so server VAD can close turns
exactly as it would for a real caller. Push-to-talk (manual turns) sends only the utterances.
"""

from __future__ import annotations

import random
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import gevent
import gevent.event

from ..histogram import MsHistogram

NS = 1_000_000


@dataclass
class Utterance:
    """One utterance queued on the mic; instants (monotonic ns) are filled in as frames go out."""

    frames: tuple[bytes, ...]  # complete append messages, shared by all sessions
    chunk_ms: int
    speech_start_ms: int  # within the fixture
    speech_end_ms: int
    buffer_start_ms: float = 0.0  # server buffer timeline position of the first frame
    start_ns: int = 0  # deadline of the first frame minus one chunk = when the mic "started hearing" it
    speech_start_ns: int = 0
    speech_end_ns: int = 0
    sent_ns: int = 0  # when the last frame went out
    dropped: int = 0
    lateness_ms: array = field(default_factory=lambda: array("d"))  # per frame; 8 B each, no objects
    started: gevent.event.Event = field(default_factory=gevent.event.Event)
    done: gevent.event.Event = field(default_factory=gevent.event.Event)

    @property
    def speech_end_audio_ms(self) -> float:
        return self.buffer_start_ms + self.speech_end_ms


class Mic:
    """Streams frames for one session in its own greenlet; ``send`` raises once the socket is gone."""

    def __init__(self, send: Callable[[bytes], None], silence: tuple[bytes, ...], chunk_ms: int, *,
                 open_mic: bool = True, drop_rate: float = 0.0, seed: int = 0):
        self._send = send
        self._silence = silence
        self.chunk_ms = chunk_ms
        self.open_mic = open_mic
        self._drop_rate = drop_rate
        self._rng = random.Random(seed)
        self._queue: deque[Utterance] = deque()
        self._wake = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None
        self.stats = MsHistogram()  # send lateness
        self.frames_sent = 0
        self.buffer_ms = 0.0  # audio the server has received (dropped chunks never arrive)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def play(self, utterance: Utterance) -> Utterance:
        self._queue.append(utterance)
        self._wake.set()
        return utterance

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1)
            self._greenlet = None

    @property
    def alive(self) -> bool:
        return self._greenlet is not None and not self._greenlet.dead

    def _run(self) -> None:
        # The hot loop of the whole harness (50 iterations per second per session): everything it
        # touches is bound to a local, the lateness histogram is updated inline, and the wait is a
        # bare libev timer that switches straight back (gevent.sleep adds a Waiter and a context
        # manager per call). Behaviour is unchanged: absolute deadlines, catch-up, real send instants.
        c_ns = self.chunk_ms * NS
        mono = time.monotonic_ns
        hub = gevent.get_hub()
        new_timer, switch, me = hub.loop.timer, hub.switch, gevent.getcurrent()
        send, stats, bins = self._send, self.stats, MsHistogram.BINS
        counts = stats.counts
        drop_rate, rand = self._drop_rate, self._rng.random
        t0 = mono()
        k = 0
        silence, n_sil = self._silence, len(self._silence)
        current: Utterance | None = None
        j = n_frames = j_start = j_end = 0  # frame index within the current utterance, and its marks
        lateness = None
        try:
            while True:
                if current is None and self._queue:
                    current, j = self._queue.popleft(), 0
                    n_frames, lateness = len(current.frames), current.lateness_ms
                    c = current.chunk_ms
                    j_start = current.speech_start_ms // c
                    j_end = -(-current.speech_end_ms // c) - 1
                if current is None and not self.open_mic:  # push-to-talk: idle until the next utterance
                    self._wake.clear()
                    self._wake.wait()
                    t0, k = mono(), 0
                    continue
                deadline = t0 + (k + 1) * c_ns
                now = mono()
                while deadline > now:
                    timer = new_timer((deadline - now) / 1e9)
                    timer.start(me.switch, update=True)
                    try:
                        switch()
                    finally:
                        timer.close()
                    now = mono()
                late_ms = (now - deadline) / NS
                if current is not None:
                    if j == 0:
                        current.start_ns = deadline - c_ns
                        current.buffer_start_ms = self.buffer_ms
                        current.started.set()
                    frame = current.frames[j]
                else:
                    frame = silence[k % n_sil]
                dropped = drop_rate > 0 and current is not None and rand() < drop_rate
                if not dropped:
                    send(frame)
                    self.buffer_ms += self.chunk_ms
                    self.frames_sent += 1
                i = int(late_ms * 10.0)
                counts[i if i < bins else bins] += 1
                stats.n += 1
                if late_ms > stats.max_ms:
                    stats.max_ms = late_ms
                if current is not None:
                    lateness.append(late_ms)
                    if dropped:
                        current.dropped += 1
                    if j == j_start or j == j_end:
                        self._mark(current, j, now)
                    j += 1
                    if j == n_frames:
                        current.sent_ns = now
                        current.done.set()
                        current = None
                k += 1
        except gevent.GreenletExit:
            return  # a clean end: no exception (and no traceback holding this frame) is kept
        except BaseException as exc:  # the socket went away: the session notices via self.error
            self.error = exc
            for u in ([current] if current else []) + list(self._queue):
                u.started.set()
                u.done.set()

    def _mark(self, u: Utterance, j: int, sent_ns: int) -> None:
        """Speech start/end instants: the frame's actual send time minus the audio after the boundary."""
        c = u.chunk_ms
        end_ms = (j + 1) * c
        if j * c <= u.speech_start_ms < end_ms:
            u.speech_start_ns = sent_ns - int((end_ms - u.speech_start_ms) * NS)
        if j * c < u.speech_end_ms <= end_ms:
            u.speech_end_ns = sent_ns - int((end_ms - u.speech_end_ms) * NS)


class LagMonitor:
    """Process-wide event-loop lag probe: how late a 50 ms sleep wakes up, kept for the last minutes."""

    INTERVAL_S = 0.05

    def __init__(self, keep: int = 6000):
        self.samples: deque[tuple[int, float]] = deque(maxlen=keep)
        self._greenlet: gevent.Greenlet | None = None
        self.users = 0
        self.ended = 0  # sessions that released the monitor (realtime_gc's leak bound)

    def acquire(self) -> None:
        self.users += 1
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)

    def release(self) -> None:
        self.users = max(0, self.users - 1)
        self.ended += 1
        if self.users == 0 and self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        while True:
            t = time.monotonic_ns()
            gevent.sleep(self.INTERVAL_S)
            now = time.monotonic_ns()
            self.samples.append((now, max(0.0, (now - t) / NS - self.INTERVAL_S * 1000)))

    def max_lag_ms(self, since_ns: int, until_ns: int | None = None) -> float:
        until_ns = until_ns or time.monotonic_ns()
        worst = 0.0
        for t, lag in reversed(self.samples):
            if t < since_ns:
                break
            if t <= until_ns and lag > worst:
                worst = lag
        return worst


LAG = LagMonitor()
