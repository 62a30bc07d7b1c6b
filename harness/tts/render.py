"""From raw speech to a caller's audio: trim, level, room tone, background noise, phone line, gain.

One pipeline serves the committed fixtures (audio_fixtures/generate.py) and synthesised ``say:``
lines, so a synthesised line is shaped exactly like a committed one. Every random draw comes from a
seeded generator: the same settings give the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import audio

SR = audio.BASE_RATE
NOISES = ("none", "car", "babble", "pink", "white")
CHANNELS = ("wideband", "g711")


def shaped_noise(n: int, rng: np.random.Generator, gain_of_freq) -> np.ndarray:
    """Gaussian noise with an amplitude response ``gain_of_freq(f_hz)``, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(max(n, 2)))
    spec *= gain_of_freq(np.fft.rfftfreq(max(n, 2), 1.0 / SR))
    y = np.fft.irfft(spec, max(n, 2))[:n]
    return y / max(float(np.sqrt(np.mean(y**2))), 1e-12)


def room_tone(n: int, rng: np.random.Generator, dbfs: float = -66.0) -> np.ndarray:
    """Quiet pink-ish microphone/room noise."""
    return shaped_noise(n, rng, lambda f: 1.0 / np.sqrt(np.maximum(f, 50.0))) * 10 ** (dbfs / 20)


def car_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Cabin noise: low-frequency rumble, engine harmonics, a little tyre hiss, slow swell."""
    rumble = shaped_noise(n, rng, lambda f: 1.0 / (1.0 + (f / 120.0) ** 2) * (f > 15))
    hiss = shaped_noise(n, rng, lambda f: (f > 1500) & (f < 6000)) * 0.05
    t = np.arange(n) / SR
    f0 = 32.0 + 2.0 * np.sin(2 * np.pi * 0.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    engine = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4)) * 0.3
    swell = 1.0 + 0.15 * np.sin(2 * np.pi * 0.23 * t + rng.uniform(0, 6))
    y = (rumble + hiss + engine) * swell
    return y / np.sqrt(np.mean(y**2))


def babble_noise(n: int, rng: np.random.Generator, talkers: int = 8) -> np.ndarray:
    """Café babble stand-in: speech-shaped noise, each 'talker' with its own syllabic on/off rhythm."""
    def ltass(f: np.ndarray) -> np.ndarray:
        return (f > 80) / (1.0 + (f / 600.0) ** 2) ** 0.6 * (1.0 + 0.6 * np.exp(-((f - 500) / 300) ** 2))

    t = np.arange(n) / SR
    y = np.zeros(n)
    for _ in range(talkers):
        rate = rng.uniform(3.0, 5.5)  # syllables per second
        env = 0.55 + 0.45 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6)) * np.sin(
            2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6))
        y += shaped_noise(n, rng, ltass) * env
    return y / np.sqrt(np.mean(y**2))


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS background noise of one of :data:`NOISES` (``none`` is silence)."""
    if kind == "car":
        return car_noise(n, rng)
    if kind == "babble":
        return babble_noise(n, rng)
    if kind == "pink":
        return shaped_noise(n, rng, lambda f: 1.0 / np.sqrt(np.maximum(f, 50.0)))
    if kind == "white":
        return shaped_noise(n, rng, lambda f: np.ones_like(f))
    if kind == "none":
        return np.zeros(n)
    raise ValueError(f"unknown noise {kind!r}; expected one of {', '.join(NOISES)}")


def trim(x: np.ndarray, below_peak_db: float = 45.0) -> np.ndarray:
    """Cut TTS leading/trailing near-silence (5 ms windows), keep 10 ms margins, fade 5 ms."""
    win = SR // 200
    n = len(x) // win
    if n < 3:
        return np.asarray(x, dtype=np.float64)
    rms = np.sqrt((x[: n * win].reshape(n, win) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -below_peak_db)
    a, b = max(0, (loud[0] - 2) * win), min(len(x), (loud[-1] + 3) * win)
    y = np.array(x[a:b], dtype=np.float64)
    ramp = np.linspace(0.0, 1.0, win)
    y[:win] *= ramp
    y[-win:] *= ramp[::-1]
    return y


def level(speech: np.ndarray, rms_dbfs: float = -20.0, peak_dbfs: float = -1.0) -> np.ndarray:
    """Scale speech to an RMS target without letting the peak pass ``peak_dbfs``."""
    rms, peak = float(np.sqrt(np.mean(speech**2))), float(np.abs(speech).max())
    if rms <= 0 or peak <= 0:
        return speech
    return speech * min(10 ** (rms_dbfs / 20) / rms, 10 ** (peak_dbfs / 20) / peak)


def place(speech: np.ndarray, lead_ms: int, trail_ms: int, rng: np.random.Generator,
          tone_dbfs: float | None) -> np.ndarray:
    """Pad speech with silence (room tone if ``tone_dbfs``), as the float signal at 24 kHz."""
    y = np.concatenate([np.zeros(SR * lead_ms // 1000), speech, np.zeros(SR * trail_ms // 1000)])
    if tone_dbfs is not None:
        y += room_tone(len(y), rng, tone_dbfs)
    return y


def telephone(x: np.ndarray) -> np.ndarray:
    """A G.711 phone line: down to 8 kHz (band-limited), mu-law encode/decode, back up to 24 kHz."""
    narrow = audio.resample(audio.to_int16(x * 32768.0), SR, 8000)
    coded = audio.ulaw_decode(audio.ulaw_encode(narrow)).astype(np.float64) / 32768.0
    y = audio.resample(coded, 8000, SR)
    return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]


@dataclass(frozen=True)
class Caller:
    """How a line reaches the service: background noise, line and level (all defaults: clean)."""

    noise: str = "none"
    snr_db: float | None = None  # None with a noise: 10 dB
    channel: str = "wideband"
    gain_db: float = 0.0

    def settings(self) -> dict[str, object]:
        return {"noise": self.noise, "snr_db": self.effective_snr, "channel": self.channel, "gain_db": self.gain_db}

    @property
    def effective_snr(self) -> float | None:
        return None if self.noise == "none" else (10.0 if self.snr_db is None else float(self.snr_db))


def caller_audio(speech: np.ndarray, caller: Caller, seed: int, *, lead_ms: int = 400,
                 trail_ms: int = 320) -> np.ndarray:
    """A float line at 24 kHz from raw speech: trimmed, levelled to -20 dBFS, padded, then ``caller``."""
    rng = np.random.default_rng(seed)
    clean = level(trim(speech), rms_dbfs=-20.0)
    return perturb(place(clean, lead_ms, trail_ms, rng, -66.0), clean, caller, rng)


def perturb(x: np.ndarray, speech: np.ndarray, caller: Caller, rng: np.random.Generator) -> np.ndarray:
    """Add ``caller``'s noise at its SNR relative to ``speech``'s RMS, then the phone line and gain."""
    snr = caller.effective_snr
    if snr is not None:
        speech_rms = float(np.sqrt(np.mean(speech**2))) if len(speech) else 0.0
        x = x + noise(caller.noise, len(x), rng) * speech_rms * 10 ** (-snr / 20)
    if caller.channel == "g711":
        x = telephone(x)
    if caller.gain_db:
        x = x * 10 ** (caller.gain_db / 20)
    return x
