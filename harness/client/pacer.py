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
#: A mic's timer fires this long after each deadline: libev's clock and ours are both CLOCK_MONOTONIC,
#: the slack only absorbs float rounding so that a frame never leaves before its deadline.
ARM_SLACK_S = 20e-6
_BINS = MsHistogram.BINS


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
    """Streams frames for one session on a repeating event-loop timer; ``send`` raises once the socket is gone.

    ``send(frame, block)`` returns False when ``block`` is False and the frame could not leave without
    waiting (another send holds the connection): nothing was sent, the frame is offered again.
    """

    def __init__(self, send: Callable[[bytes, bool], bool], silence: tuple[bytes, ...], chunk_ms: int, *,
                 open_mic: bool = True, drop_rate: float = 0.0, seed: int = 0):
        self._send = send
        self._silence = silence
        self.chunk_ms = chunk_ms
        self.open_mic = open_mic
        self._drop_rate = drop_rate
        self._rng = random.Random(seed)
        self._queue: deque[Utterance] = deque()
        self.stats = MsHistogram()  # send lateness
        self.frames_sent = 0
        self.buffer_ms = 0.0  # audio the server has received (dropped chunks never arrive)
        self.error: BaseException | None = None
        self._c_ns = chunk_ms * NS
        self._t0 = self._k = 0  # frame k is due at t0 + (k+1)·chunk
        self._current: Utterance | None = None
        self._j = self._j_start = self._j_end = 0  # frame index within the current utterance, and its marks
        self._timer = None  # the repeating libev timer while the mic runs on the event loop
        self._slow: gevent.Greenlet | None = None  # catching up with blocking sends
        self._running = False

    def start(self) -> None:
        self._running = True
        self._restart()

    def play(self, utterance: Utterance) -> Utterance:
        if self.error is not None:  # the socket is gone: nothing will ever play it
            utterance.started.set()
            utterance.done.set()
            return utterance
        self._queue.append(utterance)
        if self._running and self._timer is None and self._slow is None:
            self._restart()  # push-to-talk was idle
        return utterance

    def stop(self) -> None:
        """No frame leaves after this returns."""
        self._running = False
        self._disarm()
        if self._slow is not None:
            self._slow.kill(block=True, timeout=1)
            self._slow = None

    @property
    def alive(self) -> bool:
        return self._running and self.error is None

    # -- the clock ---------------------------------------------------------------------------------
    def _restart(self) -> None:
        """(Re)start the clock from now, unless push-to-talk has nothing to say."""
        if not self.open_mic and not self._queue and self._current is None:
            return
        self._t0, self._k = time.monotonic_ns(), 0
        self._arm()

    def _arm(self) -> None:
        """A repeating libev timer on this mic's grid. Why not a greenlet sleeping to each deadline: a
        timer object, two greenlet switches and a hub pass per frame; the whole mic cost 6.7 µs CPU
        per frame that way and 3.3 µs now (bench/pacing_bench.py, 1000 mics). libev keeps a repeating
        timer on its absolute schedule (next = previous + repeat) unless it fell a whole period behind."""
        self._disarm()
        after = max(0.0, (self._due() - time.monotonic_ns()) / 1e9) + ARM_SLACK_S  # never before the deadline
        timer = self._timer = gevent.get_hub().loop.timer(after, self._c_ns / 1e9)
        timer.start(self._tick, update=True)

    def _due(self) -> int:
        """When frame k is due: t0 + (k+1)·chunk (monotonic ns)."""
        return self._t0 + (self._k + 1) * self._c_ns

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()  # also drops its reference to this mic: no cycle outlives the mic

    def _tick(self) -> None:
        """Timer callback, in the event loop itself: must never block or switch. Sends every frame
        due (catch-up after a stall keeps the average rate exact); hands over to a greenlet when a
        send would have to wait."""
        if not self._running:
            self._disarm()
            return
        try:
            mono, c_ns = time.monotonic_ns, self._c_ns
            now, deadline = mono(), self._due()
            behind = now - deadline >= c_ns  # libev then restarts its schedule from now: re-align it
            while deadline <= now:
                sent = self._frame(now, deadline, False)
                if sent is None:  # push-to-talk: idle until the next utterance restarts the clock
                    self._disarm()
                    return
                if sent is False:  # the connection is busy: wait for it in a greenlet, in order
                    self._disarm()
                    self._slow = gevent.spawn(self._catch_up)
                    return
                now = mono()
                deadline += c_ns
            if behind:
                self._arm()
        except BaseException as exc:  # the socket went away: the session notices via self.error
            self._fail(exc)

    def _catch_up(self) -> None:
        """Blocking sends until the mic is back on schedule, then back on the timer."""
        mono = time.monotonic_ns
        try:
            while self._running:
                now, deadline = mono(), self._due()
                if deadline > now:
                    self._arm()
                    return
                if self._frame(now, deadline, True) is None:
                    return
        except gevent.GreenletExit:
            pass
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._slow = None

    # -- one frame ---------------------------------------------------------------------------------
    def _frame(self, now: int, deadline: int, block: bool) -> bool | None:
        """Send frame k (due at ``deadline``; ``now`` is its send instant). True: sent (or dropped on
        purpose); False: not sent, the connection was busy; None: push-to-talk has nothing to send.
        The hot path of the whole harness (50 per second per session): the lateness histogram is
        updated inline and the speech marks are computed only on their two frames."""
        current = self._current
        if current is None:
            if self._queue:
                current = self._current = self._queue.popleft()
                self._j, c = 0, current.chunk_ms
                self._j_start = current.speech_start_ms // c
                self._j_end = -(-current.speech_end_ms // c) - 1
            elif not self.open_mic:
                return None
        dropped = False
        if current is not None:
            j = self._j
            if j == 0:
                current.start_ns = deadline - self._c_ns
                current.buffer_start_ms = self.buffer_ms
                current.started.set()
            frame = current.frames[j]
            dropped = self._drop_rate > 0 and self._rng.random() < self._drop_rate
        else:
            frame = self._silence[self._k % len(self._silence)]
        if not dropped:
            if not self._send(frame, block):
                return False
            self.buffer_ms += self.chunk_ms
            self.frames_sent += 1
        late_ms = (now - deadline) / NS
        stats = self.stats
        i = int(late_ms * 10.0)
        stats.counts[i if i < _BINS else _BINS] += 1
        stats.n += 1
        if late_ms > stats.max_ms:
            stats.max_ms = late_ms
        self._k += 1
        if current is not None:
            current.lateness_ms.append(late_ms)
            if dropped:
                current.dropped += 1
            if j == self._j_start or j == self._j_end:
                self._mark(current, j, now)
            j += 1
            self._j = j
            if j == len(current.frames):
                current.sent_ns = now
                current.done.set()
                self._current = None
        return True

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self._disarm()
        for u in ([self._current] if self._current else []) + list(self._queue):
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
