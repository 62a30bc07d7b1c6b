"""A microphone that keeps real time: frame k is due at t0 + (k+1)·chunk, never ``sleep(chunk)``.

A late frame is sent at once (catch-up), so the average rate stays exact; each send's lateness is
recorded so turns streamed while the generator was overloaded can be flagged instead of trusted.
Between utterances an open microphone keeps sending silence/room tone, so server VAD can close turns
exactly as it would for a real caller. Push-to-talk (manual turns) sends only the utterances.
"""

from __future__ import annotations

import heapq
import random
import sys
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import gevent
import gevent.event

from ..histogram import MsHistogram

NS = 1_000_000
RETRY_NS = 2 * NS  # a transport still finishing an earlier partial write is looked at again this soon
#: The metronome wakes on this grid (monotonic ns): every frame due in one tick goes out in one pass.
#: 1 ms adds 0.5 ms of lateness on average and turns ~50 wake-ups per ms (1000 sessions) into one.
TICK_NS = 1 * NS


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
    """Streams frames for one session on the shared :data:`METRONOME`; ``send`` raises once the socket
    is gone (then ``error`` is set and every queued utterance is released)."""

    def __init__(self, send: Callable[[bytes], None], silence: tuple[bytes, ...], chunk_ms: int, *,
                 open_mic: bool = True, drop_rate: float = 0.0, seed: int = 0):
        # Must not block: it runs in the metronome (Transport.send_text(block=False)). Returns False
        # when the frame was not taken (an earlier write is still draining): it is offered again.
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
        self._t0 = self._k = 0
        self._current: Utterance | None = None
        self._j = self._n_frames = self._j_start = self._j_end = 0
        self._scheduled = False  # an entry for this mic is in the metronome's heap
        self._running = False

    def start(self) -> None:
        self._running = True
        self._resume()

    def play(self, utterance: Utterance) -> Utterance:
        if self.error is not None:  # the socket is gone: nothing will ever play it
            utterance.started.set()
            utterance.done.set()
            return utterance
        self._queue.append(utterance)
        if self._running and not self._scheduled and self.error is None:
            self._resume()  # push-to-talk was idle
        return utterance

    def stop(self) -> None:
        """No frame leaves after this returns; the metronome lets go of the mic at once (a stopped
        session is then freed by reference counting)."""
        self._running = False
        if self._scheduled:
            self._scheduled = False
            METRONOME.remove(self)

    @property
    def alive(self) -> bool:
        return self._running and self.error is None

    def _resume(self) -> None:
        """(Re)start the clock: frame k is due at t0 + (k+1)·chunk from now."""
        if not self.open_mic and not self._queue and self._current is None:
            return  # push-to-talk with nothing to say: idle until play()
        self._t0, self._k = time.monotonic_ns(), 0
        self._scheduled = True
        METRONOME.add(self, self._t0 + self._c_ns)

    def _tick(self, now: int) -> int:
        """Send the frame due now (``now`` is the send instant); when to look at this mic again, or 0
        to leave the schedule (stopped, failed, or push-to-talk out of utterances).

        The hot path of the harness (50 calls per second per session): the lateness histogram is
        updated inline and the speech marks are computed only on their two frames.
        """
        if not self._running:
            self._scheduled = False
            return 0
        current = self._current
        if current is None and self._queue:
            current = self._current = self._queue.popleft()
            self._j, self._n_frames = 0, len(current.frames)
            c = current.chunk_ms
            self._j_start = current.speech_start_ms // c
            self._j_end = -(-current.speech_end_ms // c) - 1
        deadline = self._t0 + (self._k + 1) * self._c_ns
        late_ms = (now - deadline) / NS
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
            dropped = False
        if not dropped:
            try:
                if self._send(frame) is False:
                    return now + RETRY_NS  # back-pressure: same frame, same deadline, lateness grows
            except BaseException as exc:  # the socket went away: the session notices via self.error
                self._fail(exc)
                return 0
            self.buffer_ms += self.chunk_ms
            self.frames_sent += 1
        stats = self.stats
        i = int(late_ms * 10.0)
        stats.counts[i if i < MsHistogram.BINS else MsHistogram.BINS] += 1
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
            if j == self._n_frames:
                current.sent_ns = now
                current.done.set()
                self._current = None
                if not self.open_mic and not self._queue:
                    self._scheduled = False
                    return 0  # push-to-talk: idle until the next utterance restarts the clock
        return self._t0 + (self._k + 1) * self._c_ns

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self._scheduled = False
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


class Metronome:
    """One greenlet sends every session's due frames, in deadline order, batched per wake-up.

    Why not a greenlet and a timer per session: at 1000 sessions that is 50 000 timer starts,
    hub switches and greenlet switches a second, about as much CPU as the sends themselves. Here
    the mics wait in one heap of absolute deadlines; the metronome sleeps until the earliest,
    then sends every frame that is due (each stamped with its own send instant, so lateness stays
    per frame and honest) and sleeps again. Sends never block it: the transport finishes partial
    writes in a helper greenlet (``Transport.send_text(block=False)``).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Mic]] = []
        self._seq = 0
        self._greenlet: gevent.Greenlet | None = None
        self._target = 0  # the deadline the metronome is sleeping until (0: awake)
        self._token: object | None = None

    def add(self, mic: Mic, deadline: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, mic))
        g = self._greenlet
        if g is None or g.dead:
            self._greenlet = gevent.spawn(self._run)
        elif self._token is not None and deadline < self._target:
            self._token = None  # the pending timer wake-up becomes a no-op
            gevent.get_hub().loop.run_callback(g.switch)

    def remove(self, mic: Mic) -> None:
        """O(sessions), once per session end; never called from inside a tick (sends do not switch)."""
        heap = self._heap
        for i, entry in enumerate(heap):
            if entry[2] is mic:
                heap[i] = heap[-1]
                heap.pop()
                heapq.heapify(heap)
                return

    def _wake(self, token: object) -> None:
        if token is self._token:
            self._token = None
            self._greenlet.switch()  # type: ignore[union-attr]

    def _run(self) -> None:
        heap, mono, tick = self._heap, time.monotonic_ns, TICK_NS
        pop, push = heapq.heappop, heapq.heappush
        hub = gevent.get_hub()
        new_timer, switch, me = hub.loop.timer, hub.switch, gevent.getcurrent()
        try:
            while heap:
                deadline = heap[0][0]
                now = mono()
                if deadline > now:
                    token = self._token = object()
                    wake = self._target = -(-deadline // tick) * tick  # the first tick at or after it
                    timer = new_timer((wake - now) / 1e9)
                    timer.start(self._wake, token, update=True)
                    try:
                        switch()
                    finally:
                        timer.close()
                        self._token, self._target = None, 0
                    continue  # re-checked in a loop: a frame never leaves before its deadline
                limit = now  # one batch: what is due now; then readers get their turn
                while heap and heap[0][0] <= limit:
                    mic = pop(heap)[2]
                    nxt = mic._tick(now)
                    if nxt:
                        self._seq += 1
                        push(heap, (nxt, self._seq, mic))
                    now = mono()
                mic = None  # a suspended frame's locals would keep the last session alive
                if heap and heap[0][0] <= now:
                    # Behind: a zero-delay timer, not run_callback (gevent would run a callback chain
                    # without polling): sockets and other timers get their turn before we catch up.
                    timer = new_timer(0.0)
                    timer.start(me.switch, update=True)
                    try:
                        switch()
                    finally:
                        timer.close()
        finally:
            self._greenlet = None
            if heap and not isinstance(sys.exc_info()[1], gevent.GreenletExit):
                self._greenlet = gevent.spawn(self._run)  # a bug in one tick must not stop every mic


METRONOME = Metronome()


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
