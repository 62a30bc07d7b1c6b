"""Audio formats, G.711 codecs, resampling and a robust utterance fingerprint.

Everything the harness sends or receives is one of the formats of protocol §5. The engine keeps
fixtures as int16 at 24 kHz and converts once per format (see ``fixtures.frames``), so these
functions are vectorised and table-driven: they sit on the path of hundreds of sessions.
"""

from __future__ import annotations

import base64
import functools
import re
import zlib
from dataclasses import dataclass

import numpy as np
import soxr

CODECS = ("pcm16", "ulaw", "alaw")
INPUT_RATES = (8000, 16000, 24000, 44100, 48000)
OUTPUT_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
BASE_RATE = 24000  # fixtures, replies and the default pcm16 rate


@dataclass(frozen=True)
class AudioFormat:
    """A wire format: protocol name, sample rate and codec (headerless mono samples)."""

    name: str
    sample_rate: int
    codec: str  # pcm16 | ulaw | alaw

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"unknown codec {self.codec!r}; expected one of {', '.join(CODECS)}")
        if self.sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {self.sample_rate}")

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.codec == "pcm16" else 1

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.bytes_per_sample

    def bytes_for_ms(self, ms: float) -> int:
        """Bytes holding ``ms`` of audio, rounded to whole samples."""
        return int(round(self.sample_rate * ms / 1000.0)) * self.bytes_per_sample

    def ms_for_bytes(self, n: int) -> float:
        return n * 1000.0 / self.bytes_per_second


def input_format(input_audio_format: str = "pcm16", input_audio_sampling_rate: int | None = None) -> AudioFormat:
    """The format of ``input_audio_buffer.append`` audio for a session's settings."""
    fmt = input_audio_format.strip().lower()
    if fmt in ("g711_ulaw", "g711_alaw"):
        if input_audio_sampling_rate not in (None, 8000):
            raise ValueError(f"{fmt} is 8000 Hz only, got input_audio_sampling_rate={input_audio_sampling_rate}")
        return AudioFormat(fmt, 8000, fmt[-4:])
    if fmt != "pcm16":
        raise ValueError(f"unknown input_audio_format {input_audio_format!r}; expected pcm16, g711_ulaw or g711_alaw")
    rate = BASE_RATE if input_audio_sampling_rate is None else int(input_audio_sampling_rate)
    if rate not in INPUT_RATES:
        raise ValueError(f"unsupported input_audio_sampling_rate {rate}; expected one of {INPUT_RATES}")
    return AudioFormat("pcm16", rate, "pcm16")


_OUTPUT_RE = re.compile(r"^pcm16[_-](\d+)hz$")


def output_format(name: str) -> AudioFormat:
    """The format of ``response.audio.delta`` for an ``output_audio_format`` value.

    Accepts the SDK names, the Azure-voice rates seen in live tests, and legacy dashed spellings.
    """
    key = name.strip().lower()
    if key == "pcm16":
        return AudioFormat("pcm16", BASE_RATE, "pcm16")
    if key in ("g711_ulaw", "g711_alaw"):
        return AudioFormat(key, 8000, key[-4:])
    m = _OUTPUT_RE.match(key)
    if m and int(m.group(1)) in OUTPUT_RATES:
        return AudioFormat(f"pcm16_{m.group(1)}hz", int(m.group(1)), "pcm16")
    known = ", ".join(["pcm16", *(f"pcm16_{r}hz" for r in OUTPUT_RATES), "g711_ulaw", "g711_alaw"])
    raise ValueError(f"unknown output_audio_format {name!r}; expected one of {known}")


# --- G.711 (ITU-T G.711, same bit layout as Sun's g711.c / audioop) -------------------------------
# Encoding goes through a 65536-entry table indexed by the int16 bit pattern: one gather per call.


def _ulaw_encode_formula(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.int32) >> 2  # 14-bit, as in g711.c (so negative values round toward -inf)
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.minimum(np.abs(x), 8159) + 0x21, 0x1FFF)  # g711.c: segment 8 saturates
    seg = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), mag)
    return (((seg << 4) | ((mag >> (seg + 1)) & 0x0F)) ^ mask).astype(np.uint8)


def _alaw_encode_formula(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.int32) >> 3  # A-law works on 13-bit magnitudes
    sign = np.where(x >= 0, 0x80, 0)
    mag = np.where(x >= 0, x, -x - 1)
    mag = np.minimum(mag, 0xFFF)
    exp = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    mant = np.where(exp == 0, mag >> 1, mag >> np.maximum(exp, 1)) & 0x0F
    return ((sign | (exp << 4) | mant) ^ 0x55).astype(np.uint8)


def _ulaw_decode_formula(b: np.ndarray) -> np.ndarray:
    u = ~b.astype(np.int32) & 0xFF
    exp = (u >> 4) & 0x07
    mag = (((u & 0x0F) << 3) + 0x84) << exp
    return np.where(u & 0x80, 0x84 - mag, mag - 0x84).astype(np.int16)


def _alaw_decode_formula(b: np.ndarray) -> np.ndarray:
    a = b.astype(np.int32) ^ 0x55
    exp = (a >> 4) & 0x07
    mant = a & 0x0F
    mag = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp - 1, 0))
    return np.where(a & 0x80, mag, -mag).astype(np.int16)


_ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32)
_ALL_BYTES = np.arange(256, dtype=np.uint8)
# Index by ``x.view(np.uint16)``: entries are ordered by the unsigned bit pattern of each int16.
_ULAW_ENC = np.roll(_ulaw_encode_formula(_ALL_INT16), 32768)
_ALAW_ENC = np.roll(_alaw_encode_formula(_ALL_INT16), 32768)
ULAW_TABLE = _ulaw_decode_formula(_ALL_BYTES)
ALAW_TABLE = _alaw_decode_formula(_ALL_BYTES)
ULAW_SILENCE = int(_ULAW_ENC[0])  # 0xFF
ALAW_SILENCE = int(_ALAW_ENC[0])  # 0xD5


def ulaw_encode(x: np.ndarray) -> np.ndarray:
    return _ULAW_ENC[np.ascontiguousarray(x, dtype=np.int16).view(np.uint16)]


def alaw_encode(x: np.ndarray) -> np.ndarray:
    return _ALAW_ENC[np.ascontiguousarray(x, dtype=np.int16).view(np.uint16)]


def ulaw_decode(b: bytes | np.ndarray) -> np.ndarray:
    return ULAW_TABLE[np.frombuffer(b, dtype=np.uint8) if isinstance(b, (bytes, bytearray, memoryview)) else b]


def alaw_decode(b: bytes | np.ndarray) -> np.ndarray:
    return ALAW_TABLE[np.frombuffer(b, dtype=np.uint8) if isinstance(b, (bytes, bytearray, memoryview)) else b]


def silence_byte(fmt: AudioFormat) -> bytes:
    """One byte of digital silence in ``fmt`` (pcm16 pads with zeros, G.711 with its zero code)."""
    return bytes([{"pcm16": 0, "ulaw": ULAW_SILENCE, "alaw": ALAW_SILENCE}[fmt.codec]])


# --- resampling and whole-buffer conversion ------------------------------------------------------


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling (soxr HQ). Keeps the dtype: int16 in, int16 out (clipped)."""
    if sr_in == sr_out or len(x) == 0:
        return np.array(x, copy=True)
    if x.dtype == np.int16:
        y = soxr.resample(x.astype(np.float32) / 32768.0, sr_in, sr_out, quality="HQ")
        return to_int16(y * 32768.0)
    return soxr.resample(np.asarray(x), sr_in, sr_out, quality="HQ")


def to_int16(x: np.ndarray) -> np.ndarray:
    """Round and clip float samples (int16 scale) to int16."""
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def encode(samples_int16_at_24k: np.ndarray, fmt: AudioFormat) -> bytes:
    """int16 samples at 24 kHz -> headerless bytes in ``fmt`` (resample, then codec)."""
    x = resample(np.asarray(samples_int16_at_24k, dtype=np.int16), BASE_RATE, fmt.sample_rate)
    if fmt.codec == "ulaw":
        return ulaw_encode(x).tobytes()
    if fmt.codec == "alaw":
        return alaw_encode(x).tobytes()
    return x.astype("<i2").tobytes()


def decode(data: bytes, fmt: AudioFormat) -> np.ndarray:
    """Headerless bytes in ``fmt`` -> int16 samples at ``fmt.sample_rate``."""
    if fmt.codec == "ulaw":
        return ulaw_decode(data)
    if fmt.codec == "alaw":
        return alaw_decode(data)
    n = len(data) // 2 * 2
    return np.frombuffer(data[:n], dtype="<i2").astype(np.int16)


def first_voiced_sample(data: bytes, fmt: AudioFormat, threshold_dbfs: float = -50.0) -> int | None:
    """First sample of the first 5 ms window whose RMS exceeds ``threshold_dbfs`` (None: all quiet).

    The client runs it on the first response deltas to separate leading silence from latency.
    """
    x = decode(data, fmt)
    win = max(1, fmt.sample_rate // 200)
    n = len(x) // win
    if n == 0:
        return None
    frames = x[: n * win].reshape(n, win).astype(np.float32)
    power = np.einsum("ij,ij->i", frames, frames) / win
    limit = (32768.0 * 10 ** (threshold_dbfs / 20.0)) ** 2
    hit = np.flatnonzero(power > limit)
    return int(hit[0]) * win if hit.size else None


# --- fingerprint ---------------------------------------------------------------------------------
# Log band energies in 20 ms hops (40 ms Hann windows) in 8 bands over 250-3600 Hz, which survives
# G.711 and 8 kHz. Each band is clipped FP_RANGE_DB below its own maximum, so gain drops out and
# additive noise only fills valleys that both sides have already flattened. Matching correlates the
# envelope and its slope (the slope tells an utterance from its reversal) with per-channel means
# removed, over every lag at once (FFT), penalises a template that covers only part of the query's
# activity, then refines the front runners piecewise to absorb dropped chunks.

FP_EDGES_HZ = (250.0, 400.0, 600.0, 850.0, 1150.0, 1550.0, 2050.0, 2700.0, 3600.0)
FP_HOP_MS = 20
FP_RANGE_DB = 30.0
FP_STEP_DB = 1.0  # quantisation of the stored template (then zlib: ~230 characters per second)
FP_VERSION = 3
FP_OVERHANG = 0.2  # a template may hang over the query's ends by this fraction (truncated audio)
FP_ACTIVE_DB = 15.0  # query hops within this of its loudest hop are "active"...
FP_COVERAGE = 0.8  # ...and a match should cover this fraction of them
FP_REFINE_BELOW = 0.92  # global scores under this get the piecewise refinement
FP_SEGMENTS, FP_SEGMENT_MIN, FP_SLACK = 4, 12, 3  # refinement: up to 4 pieces of >= 12 hops, each may slide 3
_B = len(FP_EDGES_HZ) - 1


FP_RATE = 8000  # everything is analysed band-limited to G.711's band


@functools.lru_cache(maxsize=1)
def _fp_bands() -> tuple[int, np.ndarray, np.ndarray]:
    hop = FP_RATE * FP_HOP_MS // 1000
    freqs = np.fft.rfftfreq(2 * hop, 1.0 / FP_RATE)
    weights = np.zeros((len(freqs), _B), np.float32)
    for b in range(_B):
        weights[(freqs >= FP_EDGES_HZ[b]) & (freqs < FP_EDGES_HZ[b + 1]), b] = 1.0
    return hop, weights, np.hanning(2 * hop).astype(np.float32)


def _envelope(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """(hops, bands) log band energy in dB at 8 kHz, clipped FP_RANGE_DB below each band's maximum."""
    x = np.asarray(samples, dtype=np.float32)
    if sample_rate != FP_RATE and len(x):
        x = soxr.resample(x, sample_rate, FP_RATE, quality="HQ")
    hop, weights, window = _fp_bands()
    if len(x) < 2 * hop:
        return np.zeros((0, _B), np.float32)
    win = np.lib.stride_tricks.sliding_window_view(x, 2 * hop)[::hop]
    spec = np.abs(np.fft.rfft(win * window, axis=1))
    env = 10.0 * np.log10(np.square(spec, out=spec) @ weights + 1.0)
    return np.maximum(env, env.max(axis=0) - FP_RANGE_DB)


def _features(env: np.ndarray) -> np.ndarray:
    """Envelope and its slope over 40 ms, side by side: (hops, 2 * bands)."""
    slope = np.zeros_like(env)
    slope[1:-1] = env[2:] - env[:-2]
    return np.concatenate([env, slope], axis=1)


def fingerprint(samples: np.ndarray, sample_rate: int) -> str:
    """Compact ASCII fingerprint of the speech region of an utterance (stored in manifest.yaml)."""
    from harness.vad import speech_bounds  # late import: vad does not depend on audio

    env = _envelope(samples, sample_rate)
    bounds = speech_bounds(np.asarray(samples), sample_rate)
    if bounds is not None:
        env = env[bounds[0] // FP_HOP_MS : -(-bounds[1] // FP_HOP_MS)]
    if len(env) < 5:
        raise ValueError("too little audio to fingerprint")
    q = np.rint((np.maximum(env - env.max(axis=0), -FP_RANGE_DB) + FP_RANGE_DB) / FP_STEP_DB)
    return base64.b64encode(bytes([FP_VERSION, _B]) + zlib.compress(q.astype(np.uint8).tobytes(), 9)).decode("ascii")


@functools.lru_cache(maxsize=4096)
def _template(fp: str) -> tuple[np.ndarray, float]:
    """Decoded features with per-channel means removed, and their norm (cached: candidates repeat)."""
    try:
        raw = base64.b64decode(fp, validate=True)
        body = zlib.decompress(raw[2:]) if len(raw) > 2 and raw[0] == FP_VERSION and raw[1] == _B else b"?"
    except (ValueError, zlib.error):
        body = b"?"
    if len(body) % _B or not body:
        raise ValueError("not a voiceload fingerprint (or one of another version)")
    t = _features(np.frombuffer(body, np.uint8).reshape(-1, _B).astype(np.float32) * FP_STEP_DB)
    t -= t.mean(axis=0)
    return t, float(np.sqrt(np.square(t).sum()))


@functools.lru_cache(maxsize=64)
def _bank_fft(fps: tuple[str, ...], nfft: int) -> np.ndarray:
    """(candidates, nfft//2+1, channels) spectra of the time-reversed templates, for one FFT size."""
    return np.stack([np.fft.rfft(_template(fp)[0][::-1], nfft, axis=0) for fp in fps])


def match(
    samples: np.ndarray, sample_rate: int, candidates: dict[str, str], min_score: float = 0.7
) -> tuple[str, float] | None:
    """Best candidate (id, score <= 1) for an utterance, or None if nothing reaches ``min_score``.

    ``candidates`` maps ids to ``fingerprint`` strings. The utterance may carry any leading or
    trailing audio. Measured scores: the same utterance through G.711, resampling, gain, 10 dB SNR
    noise or dropped chunks >= 0.85 (all at once ~0.78); other or reversed utterances, noise,
    sweeps <= 0.62. Costs 1-3 ms against 30 candidates (decoded templates are cached).
    """
    env = _envelope(samples, sample_rate)
    if len(env) < 5 or not candidates:
        return None
    level = env.max(axis=1)
    active = np.concatenate([[0], np.cumsum(level >= level.max() - FP_ACTIVE_DB)])
    ids, fps = list(candidates), tuple(candidates.values())
    temps = [_template(fp) for fp in fps]
    longest = max(len(t) for t, _ in temps)
    pad = int(longest * FP_OVERHANG)
    q = _features(np.concatenate([np.repeat(env[:1], pad, 0), env, np.repeat(env[-1:], pad, 0)]))
    nfft = 1 << int(np.ceil(np.log2(len(q) + longest)))
    corr = np.fft.irfft((_bank_fft(fps, nfft) * np.fft.rfft(q, nfft, axis=0)).sum(axis=2), nfft, axis=1)
    c1 = np.concatenate([np.zeros((1, q.shape[1])), np.cumsum(q, axis=0, dtype=np.float64)])
    c2 = np.concatenate([[0.0], np.cumsum(np.square(q, dtype=np.float64).sum(axis=1))])
    scored = []
    for i, (t, tnorm) in enumerate(temps):
        n = len(t)
        lo, hi = pad - int(n * FP_OVERHANG), pad + len(env) + int(n * FP_OVERHANG) - n  # allowed lags
        if hi < lo or tnorm == 0.0:
            continue
        s1 = c1[lo + n : hi + n + 1] - c1[lo : hi + 1]
        var = c2[lo + n : hi + n + 1] - c2[lo : hi + 1] - np.einsum("ij,ij->i", s1, s1) / n
        score = corr[i, n - 1 + lo : n + hi] / (tnorm * np.sqrt(np.maximum(var, 1e-6)))
        lag = int(np.argmax(score))
        scored.append((float(score[lag]), i, lo + lag))
    best: tuple[str, float] | None = None
    for score, i, lag in sorted(scored, reverse=True)[:2]:
        t, cid = temps[i][0], ids[i]
        if score < FP_REFINE_BELOW:
            score = max(score, _segment_score(q, t, lag))
        a, b = np.clip([lag - pad, lag - pad + len(t)], 0, len(env))
        score *= min(1.0, (active[b] - active[a]) / max(active[-1], 1) / FP_COVERAGE)
        if best is None or score > best[1]:
            best = (cid, float(score))
    return best if best is not None and best[1] >= min_score else None


def _segment_score(q: np.ndarray, t: np.ndarray, lag: int) -> float:
    """Mean of per-segment correlations, each segment free to slide FP_SLACK hops around ``lag``."""
    count = min(FP_SEGMENTS, max(1, len(t) // FP_SEGMENT_MIN))
    edges = np.linspace(0, len(t), count + 1).astype(int)
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        n = b - a
        lo, hi = max(0, lag + a - FP_SLACK), min(len(q), lag + b + FP_SLACK)
        if hi - lo < n:
            return 0.0
        seg = t[a:b] - t[a:b].sum(axis=0) / n
        part = q[lo:hi] - q[lo:hi].mean(axis=0, dtype=np.float64)  # centred: no cancellation below
        win = np.lib.stride_tricks.sliding_window_view(part, n, axis=0)  # (lags, channels, n)
        num = np.einsum("lci,ic->l", win, seg)  # window means drop out: seg is zero-mean
        sums = win.sum(axis=2)
        var = np.einsum("lci,lci->l", win, win) - np.einsum("lc,lc->l", sums, sums) / n
        total += float((num / np.sqrt(np.maximum(var, 1e-6) * np.einsum("ic,ic->", seg, seg))).max())
    return total / count
