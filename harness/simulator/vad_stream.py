"""The input audio buffer of one session: decode appends, keep the buffer timeline, run the VAD.

The buffer timeline is milliseconds of audio appended since the session started (what the
service's ``audio_start_ms``/``audio_end_ms`` count). Each append's arrival instant is kept so a
position on that timeline maps back to the instant it arrived - that is how the ground truth gets
``speech_end_recv``. The VAD (harness.vad.StreamingVad) is fed in batches of ``batch_ms``: its cost
is dominated by per-call overhead, so batching is what lets one core carry hundreds of sessions;
the price is up to ``batch_ms`` of extra decision latency, which the truth log makes visible.
"""

from __future__ import annotations

import binascii
from array import array
from collections import deque
from dataclasses import dataclass

import numpy as np

from .. import audio

try:  # a SIMD decoder (declared in pyproject); binascii if an older environment lacks it
    from pybase64 import b64decode as _simd_b64decode
except ImportError:  # pragma: no cover
    _simd_b64decode = None
from ..vad import StreamingVad, VadEvent, VadParams

ARRIVALS_KEPT = 4096  # appends remembered for position -> instant (>= 80 s of 20 ms frames)
IDLE_AUDIO_KEPT_MS = 3000  # audio kept while nobody speaks (covers prefix padding and VAD lag)
MAX_AUDIO_KEPT_MS = 60_000  # longest utterance kept for transcription


@dataclass(frozen=True, slots=True)
class SpeechEvent:
    """A VAD decision on the session's buffer timeline."""

    kind: str  # started | stopped
    audio_ms: int  # what the service reports (start - padding / end + silence)
    speech_ms: int  # true onset / end of the last speech frame


def vad_params(td: dict | None) -> VadParams:
    """VadParams from a ``turn_detection`` object (None: manual turns; the VAD still runs for truth)."""
    td = td or {}
    d = VadParams()
    return VadParams(threshold=float(td.get("threshold", d.threshold)),
                     prefix_padding_ms=int(td.get("prefix_padding_ms", d.prefix_padding_ms)),
                     silence_duration_ms=int(td.get("silence_duration_ms", d.silence_duration_ms)),
                     speech_duration_ms=int(td.get("speech_duration_ms", d.speech_duration_ms)))


class InputAudio:
    """Decoding, timeline, arrival stamps, batched VAD and the recent audio of one session."""

    def __init__(self, fmt: audio.AudioFormat, params: VadParams, batch_ms: int = 60, keep_audio: bool = False):
        self.position_ms = 0.0  # end of everything appended (buffer timeline)
        self.buffer_start_ms = 0.0  # start of the uncommitted buffer
        self.keep_audio = keep_audio
        self.batch_ms = batch_ms
        # Ring of (end position, arrival mono, arrival wall) per append; array.array: cheap item
        # assignment and no GC-tracked objects.
        self._arr_end = array("d", bytes(8 * ARRIVALS_KEPT))
        self._arr_mono = array("q", bytes(8 * ARRIVALS_KEPT))
        self._arr_wall = array("q", bytes(8 * ARRIVALS_KEPT))
        self._arr_n = 0
        self._chunks: deque[tuple[float, np.ndarray]] = deque()  # (start_ms, samples at fmt rate)
        self._chunks_rate = fmt.sample_rate
        self.speaking = False
        # Deferred mode (the server): a batch that falls due is taken (decoded, handed to the
        # detector's buffer) but classified later, by the loop pass's cross-session VAD (vad_pass.py):
        # (frames, arrival of the append that completed it, position and arrivals count then).
        self.defer = False
        self.due = False
        self._taken: list[tuple[np.ndarray | None, int, float, int]] = []
        self.arrivals_seen: int | None = None  # recv_shared as of a deferred batch's decision
        self.configure(fmt, params)

    def configure(self, fmt: audio.AudioFormat, params: VadParams) -> None:
        """New format or VAD parameters: a fresh detector whose timeline starts here."""
        self.fmt = fmt
        self.params = params
        self._ms_per_byte = 1000.0 / fmt.bytes_per_second
        self._vad = StreamingVad(fmt.sample_rate, params)
        self._vad_origin_ms = self.position_ms
        self._pending: list[bytes] = []
        self._pending_start: float | None = None
        self._pending_ms = 0.0
        self.speaking = False
        self.due = False
        self._taken = []
        if fmt.sample_rate != self._chunks_rate:
            self._chunks.clear()
            self._chunks_rate = fmt.sample_rate

    def append(self, b64: str | bytes | memoryview, recv_mono: int, recv_wall: int) -> list[SpeechEvent]:
        """One ``input_audio_buffer.append``; raises ValueError on bad base64."""
        data = decode_b64(b64)
        if not data:
            return []
        start = self.position_ms
        dur = len(data) * self._ms_per_byte
        self.position_ms = end = start + dur
        slot = self._arr_n % ARRIVALS_KEPT
        self._arr_end[slot] = end
        self._arr_mono[slot] = recv_mono
        self._arr_wall[slot] = recv_wall
        self._arr_n += 1
        self._pending.append(data)  # decoded once per batch, not per append
        if self._pending_start is None:
            self._pending_start = start
        self._pending_ms += dur
        if self._pending_ms + 1e-6 < self.batch_ms:
            return []
        if self.defer:
            self._taken.append((self.take(), recv_mono, self.position_ms, self._arr_n))
            self.due = True
            return []
        return self.flush()

    def flush(self) -> list[SpeechEvent]:
        """Classify everything pending now (also used before a manual commit; batches taken for the
        loop pass are not included: ``take_due`` first)."""
        if not self._pending:
            return []
        frames = self.take()
        return self.classified([] if frames is None else self._vad.classify(frames))

    def take(self) -> np.ndarray | None:
        """Decode what is pending and hand it to the detector: its frames now due (StreamingVad.take).

        Call only with something pending; ``classified`` must follow, in order.
        """
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        if self.fmt.codec == "pcm16":  # a read-only view: the VAD converts to float anyway
            x = np.frombuffer(data, "<i2", len(data) // 2)
        else:
            x = audio.decode(data, self.fmt)
        if self.keep_audio:
            self._chunks.append((self._pending_start, x))
        self._pending = []
        self._pending_ms = 0.0
        self._pending_start = None
        return self._vad.take(x)

    def take_due(self) -> list[tuple[np.ndarray | None, int, float, int]]:
        """The batches taken for the loop pass, oldest first: (frames, due ns, position, arrivals)."""
        taken, self._taken, self.due = self._taken, [], False
        return taken

    @property
    def vad(self) -> StreamingVad:
        return self._vad

    def classified(self, events: list[VadEvent], position_ms: float | None = None) -> list[SpeechEvent]:
        """The detector's events for what ``take`` handed it, on the buffer timeline (trimming the kept
        audio as of ``position_ms``, the position when it was taken; default: now)."""
        origin = self._vad_origin_ms
        out = []
        was_speaking = self.speaking
        for ev in events:
            out.append(_shift(ev, origin))
            self.speaking = ev.kind == "started"
        if self.keep_audio:
            # A run that stopped in this batch is read (transcribed) after we return: keep all of it
            # until the next batch, or an utterance longer than IDLE_AUDIO_KEPT_MS loses its start.
            self._trim(was_speaking or self.speaking or any(e.kind == "started" for e in out),
                       self.position_ms if position_ms is None else position_ms)
        return out

    def _trim(self, speaking: bool, position_ms: float) -> None:
        keep = MAX_AUDIO_KEPT_MS if speaking else IDLE_AUDIO_KEPT_MS
        limit = position_ms - keep
        chunks = self._chunks
        while chunks and chunks[0][0] + len(chunks[0][1]) * 1000.0 / self._chunks_rate < limit:
            chunks.popleft()

    def recv_shared(self, audio_ms: float) -> bool:
        """True if the append holding ``audio_ms`` came in the same read as the next append: a read's
        kernel stamp is its last segment's, so this one's stamp may be late (the loop was behind)."""
        total = self._arr_n if self.arrivals_seen is None else self.arrivals_seen
        n = min(total, ARRIVALS_KEPT)
        for i in range(total - 1, total - 1 - n, -1):
            slot = i % ARRIVALS_KEPT
            if self._arr_end[slot] + 1e-6 < audio_ms:
                nxt = (i + 2) % ARRIVALS_KEPT
                return i + 2 < total and self._arr_mono[nxt] == self._arr_mono[(i + 1) % ARRIVALS_KEPT]
        return False

    def recv_instant(self, audio_ms: float) -> tuple[int | None, int | None]:
        """(mono_ns, wall_ns) at which buffer position ``audio_ms`` arrived."""
        n = min(self._arr_n, ARRIVALS_KEPT)
        found = None
        for i in range(self._arr_n - 1, self._arr_n - 1 - n, -1):  # newest first
            slot = i % ARRIVALS_KEPT
            if self._arr_end[slot] + 1e-6 < audio_ms:
                break
            found = slot
        if found is None:
            return None, None
        back = int(round((self._arr_end[found] - audio_ms) * 1e6))
        return self._arr_mono[found] - back, self._arr_wall[found] - back

    def segment(self, start_ms: float, end_ms: float) -> np.ndarray:
        """Kept samples between two buffer positions (empty if not kept)."""
        sr = self._chunks_rate
        parts = []
        for c_start, samples in self._chunks:
            c_end = c_start + len(samples) * 1000.0 / sr
            if c_end <= start_ms or c_start >= end_ms:
                continue
            a = max(0, int(round((start_ms - c_start) * sr / 1000.0)))
            b = min(len(samples), int(round((end_ms - c_start) * sr / 1000.0)))
            parts.append(samples[a:b])
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    @property
    def uncommitted_ms(self) -> float:
        return max(0.0, self.position_ms - self.buffer_start_ms)

    def commit(self, end_ms: float | None = None) -> tuple[float, float]:
        """Mark the buffer committed up to ``end_ms`` (default: everything); returns the range."""
        start = self.buffer_start_ms
        end = self.position_ms if end_ms is None else min(max(end_ms, start), self.position_ms)
        self.buffer_start_ms = end
        return start, end

    def restart_vad(self) -> None:
        """Forget the detector's state and anything pending (after a manual commit): a new run starts here."""
        self.configure(self.fmt, self.params)

    def clear(self) -> None:
        self.buffer_start_ms = self.position_ms
        self.configure(self.fmt, self.params)


def decode_b64(b64: str | bytes | memoryview) -> bytes:
    """Strict base64, exactly binascii's ``strict_mode``; ValueError (with binascii's reason) if invalid.

    pybase64 decodes first: where it accepts (``validate``), it yields binascii's bytes (fuzzed in
    tests/test_vad_pass.py); whatever it refuses is left to binascii, so acceptance and errors are binascii's.
    """
    if _simd_b64decode is not None:
        try:
            return _simd_b64decode(b64, validate=True)
        except (binascii.Error, ValueError, TypeError):
            pass
    try:
        return binascii.a2b_base64(b64, strict_mode=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"invalid base64 audio: {exc}") from None


def _shift(ev: VadEvent, origin_ms: float) -> SpeechEvent:
    o = int(round(origin_ms))
    return SpeechEvent(ev.kind, ev.audio_ms + o, ev.speech_ms + o)
