"""Voice-activity detection shared by the simulator (streaming) and the fixture tooling (offline).

Energy in 300-3400 Hz over an adaptive noise floor, gated by two spectral cues (flatness rejects
noise, peak leakage rejects tones). Not webrtcvad: it is unmaintained since 2017, needs a C build,
takes only 8/16/32/48 kHz (24 kHz would need resampling) and has no continuous score to honour the
protocol's ``turn_detection.threshold``. ``speech_bounds`` runs the streaming detector itself, so
fixture bounds and simulator events agree by construction. Known limit: background noise that
starts abruptly (babble, car) reads as speech for a few hundred ms until the floor adapts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

BAND_HZ = (300.0, 3400.0)  # the telephone band: inside every input rate, G.711 included
MIN_FLOOR_DB = -70.0  # keeps digital silence from becoming the floor
# Energy cue: 0.5 at SNR_MID_DB above the floor, or at SPREAD_K x the mean height of recent
# non-speech frames above it if that is more (bursty noise such as car rumble or babble).
SNR_MID_DB = 7.0
SNR_SLOPE_DB = 2.0
SPREAD_K = 2.0
SPREAD_ALPHA = 0.05
# Noise floor: follows dips fast, creeps up slowly, and chases a signal that has gone stationary
# (the 40 ms-smoothed energy stayed within STATIONARY_DB for STATIONARY_FRAMES): hum, tones, rumble.
FLOOR_FALL = 0.5
FLOOR_RISE_DB = 0.04  # per frame: 4 dB/s
FLOOR_CHASE = 0.3
SMOOTH_FRAMES = 4
STATIONARY_FRAMES = 20
STATIONARY_DB = 5.0
# Once speech was heard, frames more than PEAK_RANGE_DB under its (decaying) peak do not count, so a
# quiet tail is cut the same way in silence and in noise.
PEAK_RANGE_DB = 25.0
PEAK_DECAY_DB = 0.1  # per frame: 10 dB/s, so a quieter next utterance still counts
RESUME_FRAMES = 3  # speech frames in a row (30 ms) that open a run or end a gap: blips do neither
GAP_COST = 0.3  # a forming run survives a gap of up to 3x its speech so far (and < silence_duration)


@dataclass
class VadParams:
    """``turn_detection`` parameters that the detector honours (protocol §2 defaults)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    speech_duration_ms: int = 200


@dataclass(frozen=True, slots=True)
class VadEvent:
    """A start/stop decision. Times are ms on the buffer timeline (samples fed since reset)."""

    kind: Literal["started", "stopped"]
    audio_ms: int  # what the service reports: start minus prefix padding / end plus silence
    speech_ms: int  # onset of the speech run / end of its last speech frame
    decided_at_ms: int  # buffer position when the decision was made


class _Spectral:
    """Per-rate constants for the vectorised frame features (20 ms Hann window, 10 ms hop)."""

    def __init__(self, sample_rate: int) -> None:
        self.n = max(1, int(round(sample_rate / 100)))
        window = np.hanning(2 * self.n)
        self.window = window.astype(np.float32)
        freqs = np.fft.rfftfreq(2 * self.n, 1.0 / sample_rate)
        idx = np.flatnonzero((freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1]))
        self.lo, self.hi = int(idx[0]), int(idx[-1]) + 1
        tilt = freqs[self.lo : self.hi] / 1000.0  # +3 dB/octave: pink noise looks white
        self.tilt = tilt.astype(np.float32)
        self.mean_log_tilt = float(np.log(tilt).mean())
        self.log_bins = float(np.log(self.hi - self.lo))
        self.inv_bins = 1.0 / (self.hi - self.lo)
        # Band power -> mean square of the band-limited signal, in dB re int16 full scale.
        self.db_offset = 10.0 * np.log10(2.0 / (2 * self.n * float(np.sum(window**2)))) - 90.309

    def windows(self, frames: np.ndarray) -> np.ndarray:
        """The 20 ms windows (10 ms hop) over ``frames``: the previous frame, then the new ones (a view)."""
        n = self.n
        return np.ndarray((len(frames) // n - 1, 2 * n), np.float32, frames, 0, (4 * n, 4))

    def features(self, frames: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Per 10 ms frame of a contiguous float32 buffer (see ``windows``): ``rows`` of its windows."""
        return self.rows(self.windows(frames) * self.window)

    def rows(self, win: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Per Hann-weighted window: [band power, summed log power, tilted band power, strongest 5-bin power].

        Row-wise numpy only (no BLAS): a row's results do not depend on the other rows, so neither
        how a stream was chunked nor which sessions' windows are stacked together (``feed_many``)
        changes them; the scalar maths on these sums happens per frame in ``StreamingVad._decide``.
        """
        p = np.abs(np.fft.rfft(win, axis=1)[:, self.lo : self.hi])
        p *= p
        p += 1e-3
        c = p.cumsum(axis=1)
        peak = (c[:, 5:] - c[:, :-5]).max(axis=1)
        np.maximum(peak, c[:, 4], out=peak)
        sum_log = np.log(p).sum(axis=1)
        p *= self.tilt  # the same products as ``p * tilt``, without another array (p is not needed after)
        # Four short lists zipped: the same float values as stacking them into one array, fewer calls.
        return list(zip(c[:, -1].tolist(), sum_log.tolist(), p.sum(axis=1).tolist(), peak.tolist()))


_SPECTRAL: dict[int, _Spectral] = {}


class StreamingVad:
    """Turn detection over a live stream: feed chunks of any size, get start/stop events."""

    def __init__(self, sample_rate: int, params: VadParams | None = None) -> None:
        self.sample_rate = int(sample_rate)
        self.params = params or VadParams()
        if self.sample_rate not in _SPECTRAL:
            _SPECTRAL[self.sample_rate] = _Spectral(self.sample_rate)
        self._sp = _SPECTRAL[self.sample_rate]
        self.reset()

    def reset(self) -> None:
        """Forget everything: the timeline restarts at 0 (as after ``input_audio_buffer.clear``)."""
        n = self._sp.n
        self._pending = np.zeros(0, np.float32)
        self._prev = np.zeros(n, np.float32)
        self._pos = 0  # samples classified so far
        self._floor: float | None = None
        self._spread = 2.0  # mean height (dB) of non-speech frames above the floor
        self._peak = -200.0  # loudest recent speech frame (dBFS)
        self._recent: list[float] = []  # smoothed energies (dB) of the last STATIONARY_FRAMES
        self._recent_hi = -math.inf  # max(self._recent) and min(self._recent), kept as frames come and go
        self._recent_lo = math.inf
        self._lin: list[float] = []  # linear powers of the last SMOOTH_FRAMES
        self.speaking = False
        self._cand_start = -1  # sample where the candidate run began (-1: none)
        self._cand_speech = 0
        self._credit = 0.0  # gap allowance of the forming run (samples of speech, minus gaps)
        self._gap = 0
        self._run = 0  # consecutive speech frames
        self._last_end = 0  # sample at the end of the last speech frame
        self.last_probability = 0.0

    def _ms(self, samples: int) -> int:
        return int(round(samples * 1000 / self.sample_rate))

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        """Classify whole 10 ms frames of ``samples`` (int16, or float in [-1, 1]) and return events."""
        frames = self.take(samples)
        return [] if frames is None else self.classify(frames)

    def classify(self, frames: np.ndarray) -> list[VadEvent]:
        """Events for frames returned by ``take`` (on their own; ``feed_many`` stacks several detectors')."""
        return self._decide(self._sp.features(frames))

    def take(self, samples: np.ndarray) -> np.ndarray | None:
        """Buffer ``samples``; the whole frames now due (after the last classified one), or None.

        ``feed`` is ``take`` then classify; ``feed_many`` takes from several detectors, then
        classifies all their frames in one spectral pass.
        """
        x = np.asarray(samples)
        if x.dtype.kind not in "iu":
            x = (x * 32768.0).astype(np.float32)
        n = self._sp.n
        count = (len(self._pending) + len(x)) // n
        if count == 0:
            self._pending = np.concatenate((self._pending, x.astype(np.float32)))
            return None
        # One contiguous float32 buffer: last classified frame, leftovers, new samples (int16 samples
        # are converted while copied in: exact, one array fewer than astype + concatenate).
        k, m = len(self._prev), len(self._pending)
        buf = np.empty(k + m + len(x), np.float32)
        buf[:k] = self._prev
        buf[k : k + m] = self._pending
        buf[k + m :] = x
        used = (count + 1) * n
        self._prev = buf[used - n : used]
        self._pending = buf[used:]
        return buf[:used]

    def _decide(self, feats: list[tuple[float, float, float, float]]) -> list[VadEvent]:
        """Per-frame scalar loop: noise floor, speech probability, then the start/stop state machine.

        The hottest loop of the simulator (two frames per 20 ms append per session): constants are
        locals and two-way ``min``/``max`` are conditional expressions returning exactly what the
        builtins return (``max(a, b)`` is ``b if b > a else a``), so every float is unchanged.
        """
        p = self.params
        n, sr, threshold = self._sp.n, self.sample_rate, p.threshold
        need = p.speech_duration_ms * sr // 1000
        silence_needed = p.silence_duration_ms * sr // 1000
        floor, peak, spread, recent, lin, events = self._floor, self._peak, self._spread, self._recent, self._lin, []
        pos, gap, run, speaking = self._pos, self._gap, self._run, self.speaking
        cand_start, cand_speech, credit, last_end = self._cand_start, self._cand_speech, self._credit, self._last_end
        prob = self.last_probability
        hi, lo = self._recent_hi, self._recent_lo
        sp = self._sp
        db_offset, inv_bins, mean_log_tilt, log_bins = sp.db_offset, sp.inv_bins, sp.mean_log_tilt, sp.log_bins
        log10, exp, log = math.log10, math.exp, math.log
        gap_cost = GAP_COST * n
        for total, sum_log, tilted, peak5 in feats:
            e = 10.0 * log10(total) + db_offset  # band energy, dBFS
            # Spectral flatness, as is and tilted +3 dB/octave: >0.45 for white to pink noise, ~0.1
            # for voiced speech. Leakage outside the strongest 5 bins: ~0 for a tone, >0.005 speech.
            mean_log = sum_log * inv_bins
            a = mean_log - log(total)
            b = mean_log + mean_log_tilt - log(tilted)
            flat = exp((b if b > a else a) + log_bins)
            a = (0.55 - flat) * 5.0
            b = (log10(1.0 - peak5 / total + 1e-9) + 2.7) / 0.6
            s = b if b < a else a
            s = 0.0 if s < 0.0 else 1.0 if s > 1.0 else s
            if floor is None:
                floor = MIN_FLOOR_DB if MIN_FLOOR_DB > e else e
            height = e - floor
            a = peak - PEAK_RANGE_DB
            b = SPREAD_K * spread
            x = (e - (a if a > floor else floor) - (b if b > SNR_MID_DB else SNR_MID_DB)) / SNR_SLOPE_DB
            prob = s / (1.0 + exp(-x)) if x > -30.0 else 0.0
            if prob < threshold and not speaking and cand_start < 0:
                h = 0.0 if 0.0 > height else height
                spread += SPREAD_ALPHA * ((15.0 if 15.0 < h else h) - spread)
            # Stationarity on a 40 ms moving average of power: sudden steady noise is absorbed fast.
            lin.append(10.0 ** (e * 0.1))
            if len(lin) > SMOOTH_FRAMES:
                del lin[0]
            r = 10.0 * log10(sum(lin) / len(lin))
            recent.append(r)
            # The window's max and min without scanning it per frame: rescanned only when the value
            # leaving was the extreme (max/min select values, so they are the same floats).
            if len(recent) > STATIONARY_FRAMES:
                old = recent.pop(0)
                hi = max(recent) if old == hi else r if r > hi else hi
                lo = min(recent) if old == lo else r if r < lo else lo
            else:
                hi = r if r > hi else hi
                lo = r if r < lo else lo
            if e < floor:
                floor += FLOOR_FALL * (e - floor)
            elif len(recent) == STATIONARY_FRAMES and hi - lo < STATIONARY_DB:
                a = lo - STATIONARY_DB - floor
                floor += FLOOR_CHASE * (a if a > 0.0 else 0.0)
            else:
                a = e - floor
                floor += a if a < FLOOR_RISE_DB else FLOOR_RISE_DB
            if floor < MIN_FLOOR_DB:
                floor = MIN_FLOOR_DB
            start, pos = pos, pos + n
            peak -= PEAK_DECAY_DB
            if prob >= threshold:
                run += 1
                if e > peak:
                    peak = e
            else:
                run = 0
            if speaking:
                if run and (gap == 0 or run >= RESUME_FRAMES):
                    last_end, gap = pos, 0
                else:
                    gap += n
                    if gap >= silence_needed:
                        speaking, cand_start, end = False, -1, self._ms(last_end)
                        events.append(VadEvent("stopped", end + p.silence_duration_ms, end, self._ms(pos)))
            elif run:
                gap = 0
                if cand_start >= 0:
                    cand_speech += n
                    credit += n
                elif run >= RESUME_FRAMES:  # a run starts with 30 ms of speech in a row: blips do not
                    cand_start, cand_speech = start - (run - 1) * n, run * n
                    credit = float(cand_speech)
                if cand_start >= 0 and cand_speech >= need:
                    speaking, onset, last_end = True, self._ms(cand_start), pos
                    events.append(VadEvent("started", max(0, onset - p.prefix_padding_ms), onset, self._ms(pos)))
            else:
                gap += n
                if cand_start >= 0:
                    credit -= gap_cost
                    if credit < 0 or gap >= silence_needed:
                        cand_start = -1
        self._spread = spread
        self._floor, self._peak, self._pos, self._gap, self._run, self.speaking = floor, peak, pos, gap, run, speaking
        self._cand_start, self._cand_speech, self._credit, self._last_end = cand_start, cand_speech, credit, last_end
        self.last_probability = prob
        self._recent_hi, self._recent_lo = hi, lo
        return events

    @property
    def position_ms(self) -> int:
        """Buffer position (ms) of everything classified so far."""
        return self._ms(self._pos)


# Windows per stacked spectral pass (a session's batch is never split): at 24 kHz a row is ~1.9 KB in
# and out, so every array stays under glibc's 128 KiB mmap threshold; above it each pass page-faults
# freshly mapped memory (measured here: rfft 1.05 us/row at 64 rows, 3.85 us/row at 130).
ROWS_PER_PASS = 48


def feed_many(taken: list[tuple[StreamingVad, np.ndarray | None]]) -> list[list[VadEvent]]:
    """Classify what several detectors ``take``-ed: events per detector, exactly as ``feed`` gives them.

    Windows of every detector with the same sample rate are stacked into one matrix, so the FFT and
    the reductions run once per ROWS_PER_PASS windows instead of once per detector (their per-call
    overhead is most of the cost of a 100 ms batch); each detector's scalar loop then runs on its rows.
    """
    groups: dict[int, list[int]] = {}
    for i, (vad, frames) in enumerate(taken):
        if frames is not None:
            groups.setdefault(id(vad._sp), []).append(i)
    feats: list[list[tuple[float, float, float, float]]] = [[] for _ in taken]
    for idx in groups.values():
        sp = taken[idx[0]][0]._sp
        start = 0
        while start < len(idx):
            wins, rows, stop = [], 0, start
            while stop < len(idx) and (rows < ROWS_PER_PASS or stop == start):
                w = sp.windows(taken[idx[stop]][1])  # type: ignore[arg-type]
                wins.append(w)
                rows += len(w)
                stop += 1
            m = np.concatenate(wins)
            m *= sp.window  # the same float32 products as ``windows * window``
            out = sp.rows(m)
            a = 0
            for i, w in zip(idx[start:stop], wins):
                feats[i] = out[a : a + len(w)]
                a += len(w)
            start = stop
    return [vad._decide(f) if f else [] for (vad, _), f in zip(taken, feats)]


def speech_bounds(samples: np.ndarray, sample_rate: int, params: VadParams | None = None) -> tuple[int, int] | None:
    """(start of the first speech run, end of the last) in ms, exactly as ``StreamingVad`` reports."""
    params = params or VadParams()
    vad = StreamingVad(sample_rate, params)
    tail = np.zeros(int(sample_rate * (params.silence_duration_ms + 50) / 1000), dtype=np.int16)
    x = np.asarray(samples)
    events = vad.feed(x) + vad.feed(tail if x.dtype == np.int16 else tail.astype(np.float32))
    starts = [ev.speech_ms for ev in events if ev.kind == "started"]
    stops = [ev.speech_ms for ev in events if ev.kind == "stopped"]
    if not starts or not stops:
        return None
    return starts[0], stops[-1]
