"""Formats, G.711, resampling, first-voiced detection and the fingerprint, on the committed fixtures."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from harness import audio
from harness.fixtures import load_manifest, pink_noise

FIXTURES = load_manifest()
CANDIDATES = {f.id: f.fingerprint for f in FIXTURES.values()}


def group(fid: str) -> str:
    """A noisy variant and its clean twin are the same utterance."""
    return FIXTURES[fid].variant_of or fid


# --- formats ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, rate, codec",
    [
        ("pcm16", 24000, "pcm16"),
        ("pcm16_8000hz", 8000, "pcm16"),
        ("pcm16_16000hz", 16000, "pcm16"),
        ("pcm16_22050hz", 22050, "pcm16"),
        ("pcm16_24000hz", 24000, "pcm16"),
        ("pcm16_44100hz", 44100, "pcm16"),
        ("pcm16_48000hz", 48000, "pcm16"),
        ("pcm16-8000hz", 8000, "pcm16"),
        ("pcm16-16000hz", 16000, "pcm16"),
        ("g711_ulaw", 8000, "ulaw"),
        ("g711_alaw", 8000, "alaw"),
    ],
)
def test_output_format_spellings(name: str, rate: int, codec: str) -> None:
    fmt = audio.output_format(name)
    assert (fmt.sample_rate, fmt.codec) == (rate, codec)
    assert "-" not in fmt.name


@pytest.mark.parametrize("name", ["pcm24", "pcm16_12345hz", "opus", ""])
def test_output_format_unknown(name: str) -> None:
    with pytest.raises(ValueError, match="output_audio_format"):
        audio.output_format(name)


def test_input_format() -> None:
    assert audio.input_format() == audio.AudioFormat("pcm16", 24000, "pcm16")
    for rate in (8000, 16000, 24000, 44100, 48000):
        assert audio.input_format("pcm16", rate).sample_rate == rate
    assert audio.input_format("g711_ulaw").sample_rate == 8000
    assert audio.input_format("g711_alaw", 8000).codec == "alaw"
    with pytest.raises(ValueError, match="input_audio_sampling_rate"):
        audio.input_format("pcm16", 22050)
    with pytest.raises(ValueError, match="8000"):
        audio.input_format("g711_ulaw", 16000)
    with pytest.raises(ValueError, match="input_audio_format"):
        audio.input_format("mp3")


def test_byte_arithmetic() -> None:
    assert audio.input_format().bytes_for_ms(20) == 960
    assert audio.input_format("pcm16", 16000).bytes_for_ms(20) == 640
    assert audio.input_format("g711_ulaw").bytes_for_ms(20) == 160
    assert audio.input_format().bytes_per_second == 48000
    assert audio.output_format("g711_alaw").ms_for_bytes(8000) == 1000.0
    assert audio.output_format("pcm16_22050hz").bytes_for_ms(20) == 882


# --- G.711 -----------------------------------------------------------------------------------------


def test_g711_reference_values() -> None:
    assert audio.ULAW_SILENCE == 0xFF and audio.ALAW_SILENCE == 0xD5
    assert audio.ulaw_decode(bytes([0x00, 0x80, 0xFF, 0x7F])).tolist() == [-32124, 32124, 0, 0]
    assert audio.alaw_decode(bytes([0xD5, 0x55, 0x2A, 0xAA])).tolist() == [8, -8, -32256, 32256]
    assert audio.ulaw_encode(np.array([0, 32767, -32768], np.int16)).tolist() == [0xFF, 0x80, 0x00]
    assert audio.alaw_encode(np.array([0, 32767, -32768], np.int16)).tolist() == [0xD5, 0xAA, 0x2A]


def test_g711_matches_audioop() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # stdlib up to 3.12: the classic reference
    x = np.arange(-32768, 32768, dtype=np.int16)
    assert audio.ulaw_encode(x).tobytes() == audioop.lin2ulaw(x.tobytes(), 2)
    assert audio.alaw_encode(x).tobytes() == audioop.lin2alaw(x.tobytes(), 2)
    b = bytes(range(256))
    assert audio.ulaw_decode(b).tobytes() == audioop.ulaw2lin(b, 2)
    assert audio.alaw_decode(b).tobytes() == audioop.alaw2lin(b, 2)


@pytest.mark.parametrize("codec", ["ulaw", "alaw"])
def test_g711_round_trip_error_bound(codec: str) -> None:
    enc, dec = (audio.ulaw_encode, audio.ulaw_decode) if codec == "ulaw" else (audio.alaw_encode, audio.alaw_decode)
    x = np.arange(-32000, 32000, dtype=np.int16)
    err = np.abs(dec(enc(x)).astype(np.int32) - x)
    # Logarithmic quantiser: error within 1/16 of the magnitude (one step of 16 per segment) plus a
    # small constant near zero.
    assert np.all(err <= np.abs(x.astype(np.int32)) / 16 + 16)
    speech = FIXTURES["cs_order_status"].samples()
    fmt = audio.AudioFormat(f"g711_{codec}", 24000, codec)
    y = audio.decode(audio.encode(speech, fmt), fmt)
    snr = 10 * np.log10(np.sum(speech.astype(float) ** 2) / np.sum((y.astype(float) - speech) ** 2))
    assert snr > 30


# --- resampling and whole-buffer conversion --------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_resample_keeps_tone(rate: int) -> None:
    t = np.arange(24000) / 24000
    x = audio.to_int16(np.sin(2 * np.pi * 1000 * t) * 10000)
    y = audio.resample(x, 24000, rate)
    assert y.dtype == np.int16 and abs(len(y) - rate) <= 1
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.argmax(spec) * rate / len(y)
    assert abs(peak_hz - 1000) <= 2
    assert abs(np.sqrt(np.mean(y[rate // 10 : -rate // 10].astype(float) ** 2)) - 10000 / np.sqrt(2)) < 100
    back = audio.resample(y, rate, 24000)
    assert np.corrcoef(back[2400:-2400], x[2400:-2400])[0, 1] > 0.999


@pytest.mark.parametrize("name", ["pcm16", "pcm16_16000hz", "pcm16_44100hz", "g711_ulaw", "g711_alaw"])
def test_encode_decode(name: str) -> None:
    fmt = audio.output_format(name)
    x = FIXTURES["car_temperature"].samples()
    data = audio.encode(x, fmt)
    assert abs(len(data) - fmt.bytes_for_ms(len(x) / 24)) <= 2 * fmt.bytes_per_sample
    y = audio.resample(audio.decode(data, fmt), fmt.sample_rate, 24000)
    n = min(len(x), len(y))
    assert np.corrcoef(x[:n], y[:n])[0, 1] > 0.98
    if name == "pcm16":
        assert data == x.astype("<i2").tobytes()


def test_first_voiced_sample() -> None:
    fmt = audio.output_format("pcm16_16000hz")
    tone = audio.to_int16(np.sin(np.arange(1600) * 0.3) * 3000)
    x = np.concatenate([np.zeros(1600, np.int16), tone])  # 100 ms of silence
    assert audio.first_voiced_sample(x.tobytes(), fmt) == 1600
    assert audio.first_voiced_sample(np.zeros(4000, np.int16).tobytes(), fmt) is None
    quiet = np.full(4000, 20, np.int16)  # -64 dBFS: below the default threshold
    assert audio.first_voiced_sample(quiet.tobytes(), fmt) is None
    assert audio.first_voiced_sample(quiet.tobytes(), fmt, threshold_dbfs=-70) == 0
    ulaw = audio.output_format("g711_ulaw")
    data = audio.encode(np.concatenate([np.zeros(2400, np.int16), audio.to_int16(np.sin(np.arange(4800) * 0.2) * 8000)]), ulaw)
    assert audio.first_voiced_sample(data, ulaw) == 800


# --- fingerprint -----------------------------------------------------------------------------------


def drop_chunks(x: np.ndarray, start_ms: int, end_ms: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        k = int(rng.integers(start_ms * 24, end_ms * 24 - 480)) // 480 * 480
        x = np.concatenate([x[:k], x[k + 480 :]])
    return x


def degraded(fid: str):
    f = FIXTURES[fid]
    x = f.samples()
    ulaw = audio.input_format("g711_ulaw")
    speech = x[f.speech_start_ms * 24 : f.speech_end_ms * 24].astype(float)
    rms = np.sqrt(np.mean(speech**2))
    yield "ulaw@8k", audio.decode(audio.encode(x, ulaw), ulaw), 8000
    yield "16k", audio.resample(x, 24000, 16000), 16000
    yield "+6dB", audio.to_int16(x * 2.0), 24000
    yield "-6dB", audio.to_int16(x * 0.5), 24000
    yield "snr10", audio.to_int16(x + pink_noise(len(x), seed=7) * rms / np.sqrt(10)), 24000
    yield "dropped", drop_chunks(x, f.speech_start_ms, f.speech_end_ms, 3, seed=len(fid)), 24000
    yield "silence", np.concatenate([np.zeros(30000, np.int16), x, np.zeros(20000, np.int16)]), 24000


@pytest.mark.parametrize("fid", sorted(FIXTURES))
def test_fingerprint_identifies_fixture(fid: str) -> None:
    for name, y, rate in degraded(fid):
        got = audio.match(y, rate, CANDIDATES)
        assert got is not None, f"{fid} through {name}: no match"
        assert group(got[0]) == group(fid), f"{fid} through {name}: matched {got}"
        assert got[1] >= 0.8, f"{fid} through {name}: weak score {got[1]:.3f}"


def test_fingerprint_rejects_unrelated() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(72000) / 24000
    unrelated = {
        "white noise": audio.to_int16(rng.standard_normal(72000) * 3000),
        "sine sweep": audio.to_int16(np.sin(2 * np.pi * (100 * t + 650 * t**2)) * 8000),
        "silence": np.zeros(48000, np.int16),
    }
    for fid, f in FIXTURES.items():
        unrelated[f"{fid} reversed"] = f.samples()[::-1].copy()
    for name, y in unrelated.items():
        assert audio.match(y, 24000, CANDIDATES) is None, name


def test_fingerprint_is_compact_and_stable() -> None:
    f = FIXTURES["tutor_en_past_tense"]
    fp = audio.fingerprint(f.samples(), 24000)
    assert fp == f.fingerprint and fp.isascii() and len(fp) < 2000
    with pytest.raises(ValueError):
        audio.match(f.samples(), 24000, {"x": "bm90IGEgZmluZ2VycHJpbnQ="})


def test_match_is_fast() -> None:
    x = FIXTURES["cs_reset_password"].samples()
    audio.match(x, 24000, CANDIDATES)  # warm the template caches
    t = time.perf_counter()
    for _ in range(20):
        audio.match(x, 24000, CANDIDATES)
    per_call = (time.perf_counter() - t) / 20
    assert per_call < 0.025  # ~2 ms here; generous for loaded CI machines
