"""The VAD on the committed fixtures: streaming == offline, noise rejection, parameter semantics."""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness import audio
from harness.fixtures import load_manifest, pink_noise
from harness.vad import StreamingVad, VadEvent, VadParams, speech_bounds

FIXTURES = load_manifest()
CLEAN = sorted(fid for fid, f in FIXTURES.items() if f.variant_of is None)
NOISY = sorted(fid for fid, f in FIXTURES.items() if f.variant_of is not None)


def stream(x: np.ndarray, rate: int, chunk: int | list[int], params: VadParams | None = None) -> list[VadEvent]:
    """Feed ``x`` in chunks (a size, or a cycle of sizes), then a second of silence."""
    vad = StreamingVad(rate, params or VadParams())
    sizes = chunk if isinstance(chunk, list) else [chunk]
    events, i, k = [], 0, 0
    while i < len(x):
        events += vad.feed(x[i : i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return events + vad.feed(np.zeros(rate, np.int16))


@pytest.mark.parametrize("fid", sorted(FIXTURES))
def test_streaming_matches_offline_and_manifest(fid: str) -> None:
    f = FIXTURES[fid]
    x = f.samples()
    bounds = speech_bounds(x, 24000)
    assert bounds == (f.speech_start_ms, f.speech_end_ms)
    for chunk in (480, 2400, [160, 333, 1200, 7]):  # 20 ms, 100 ms, ragged
        events = stream(x, 24000, chunk)
        kinds = [e.kind for e in events]
        assert kinds == ["started", "stopped"] * (len(kinds) // 2) and kinds
        assert (events[0].speech_ms, events[-1].speech_ms) == bounds
        assert events == stream(x, 24000, 480)  # chunking never changes a decision


@pytest.mark.parametrize("fid", CLEAN)
def test_clean_bounds_are_plausible(fid: str) -> None:
    f = FIXTURES[fid]
    assert 250 <= f.speech_start_ms <= 600  # generated with 300-500 ms of leading room tone
    assert 200 <= f.duration_ms - f.speech_end_ms <= 600  # ~300 ms trailing, plus a clipped tail


@pytest.mark.parametrize("fid", NOISY)
def test_noisy_variant_bounds_match_clean_twin(fid: str) -> None:
    noisy, clean = FIXTURES[fid], FIXTURES[FIXTURES[fid].variant_of]
    assert abs(noisy.speech_start_ms - clean.speech_start_ms) <= 60
    assert abs(noisy.speech_end_ms - clean.speech_end_ms) <= 60


@pytest.mark.parametrize("fmt_name", ["g711_ulaw", "pcm16_16000hz"])
def test_bounds_survive_telephone_formats(fmt_name: str) -> None:
    fmt = audio.output_format(fmt_name)
    for fid in CLEAN[:6]:
        x = FIXTURES[fid].samples()
        y = audio.decode(audio.encode(x, fmt), fmt)
        got, ref = speech_bounds(y, fmt.sample_rate), speech_bounds(x, 24000)
        assert got is not None and abs(got[0] - ref[0]) <= 30 and abs(got[1] - ref[1]) <= 60, fid


def noises(rate: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    n = rate * 4
    t = np.arange(n) / rate
    return {
        "white -40 dBFS": rng.standard_normal(n) * 32768 * 10 ** (-40 / 20),
        "pink -35 dBFS": audio.resample(pink_noise(n * 24000 // rate, seed=2), 24000, rate) * 32768 * 10 ** (-35 / 20),
        "1 kHz tone -20 dBFS": np.sin(2 * np.pi * 1000 * t) * np.sqrt(2) * 32768 * 10 ** (-20 / 20),
        "440 Hz tone -10 dBFS": np.sin(2 * np.pi * 440 * t) * np.sqrt(2) * 32768 * 10 ** (-10 / 20),
        "room tone -60 dBFS": rng.standard_normal(n) * 32768 * 10 ** (-60 / 20),
    }


@pytest.mark.parametrize("rate", [24000, 16000, 8000])
def test_noise_and_tones_are_not_speech(rate: int) -> None:
    for name, x in noises(rate).items():
        pcm = audio.to_int16(x)
        assert stream(pcm, rate, rate // 50) == [], f"{name} from the start"
        after_silence = np.concatenate([np.zeros(rate, np.int16), pcm])
        assert stream(after_silence, rate, rate // 50) == [], f"{name} after a second of silence"


def test_speech_in_noise_is_speech() -> None:
    for fid in CLEAN:
        f = FIXTURES[fid]
        x = f.samples().astype(float)
        rms = np.sqrt(np.mean(x[f.speech_start_ms * 24 : f.speech_end_ms * 24] ** 2))
        noisy = audio.to_int16(x + np.random.default_rng(3).standard_normal(len(x)) * rms / np.sqrt(10))
        got = speech_bounds(noisy, 24000)
        assert got is not None and abs(got[0] - f.speech_start_ms) <= 80, (fid, got)


def test_threshold_is_monotonic() -> None:
    for fid in sorted(FIXTURES):
        x = FIXTURES[fid].samples()
        lo, mid, hi = (speech_bounds(x, 24000, VadParams(threshold=t)) for t in (0.2, 0.5, 0.95))
        assert lo[0] <= mid[0] and lo[1] >= mid[1], fid
        assert hi is None or (hi[0] >= mid[0] and hi[1] <= mid[1]), fid


def test_event_timing_follows_params() -> None:
    x = FIXTURES["car_eta"].samples()
    for silence in (200, 500, 900):
        for prefix in (0, 300, 2000):
            params = VadParams(prefix_padding_ms=prefix, silence_duration_ms=silence)
            events = stream(x, 24000, 480, params)
            for e in events:
                if e.kind == "started":
                    assert e.audio_ms == max(0, e.speech_ms - prefix)
                    assert e.decided_at_ms >= e.speech_ms + params.speech_duration_ms
                else:
                    assert e.audio_ms == e.speech_ms + silence
                    assert e.decided_at_ms == e.speech_ms + silence
    # "How long until we get there? | Is there any traffic ahead?": a short silence splits the turn.
    short = stream(x, 24000, 480, VadParams(silence_duration_ms=200))
    long = stream(x, 24000, 480, VadParams(silence_duration_ms=900))
    assert len(short) > len(long) == 2


def test_speech_duration() -> None:
    x = FIXTURES["car_call_mom"].samples()  # about half a second of speech
    assert speech_bounds(x, 24000, VadParams(speech_duration_ms=200)) is not None
    assert speech_bounds(x, 24000, VadParams(speech_duration_ms=600)) is None
    early = stream(x, 24000, 480, VadParams(speech_duration_ms=100))[0]
    late = stream(x, 24000, 480, VadParams(speech_duration_ms=400))[0]
    assert early.speech_ms == late.speech_ms and late.decided_at_ms - early.decided_at_ms >= 250


def test_reset_restarts_the_timeline() -> None:
    x = FIXTURES["cs_double_charge"].samples()
    vad = StreamingVad(24000)
    first = vad.feed(x) + vad.feed(np.zeros(24000, np.int16))
    vad.reset()
    assert vad.position_ms == 0
    assert vad.feed(x) + vad.feed(np.zeros(24000, np.int16)) == first


def test_float_input_and_offset_timeline() -> None:
    x = FIXTURES["cs_double_charge"].samples()
    ref = speech_bounds(x, 24000)
    assert speech_bounds(x.astype(np.float32) / 32768, 24000) == ref
    padded = np.concatenate([np.zeros(12000, np.int16), x])
    assert speech_bounds(padded, 24000) == (ref[0] + 500, ref[1] + 500)


def test_cost_per_frame() -> None:
    x = FIXTURES["cs_order_status_noisy10"].samples()
    chunks = [x[i : i + 480] for i in range(0, len(x) - 480, 480)] * 5
    vad = StreamingVad(24000)
    t = time.perf_counter()
    for c in chunks:
        vad.feed(c)
    per_frame = (time.perf_counter() - t) / (2 * len(chunks))
    assert per_frame < 200e-6  # ~20 us here with 20 ms chunks; generous for loaded CI machines
