"""``python -m bench.tts_bench``: speech synthesis speed per engine, simulator WER on synthesised lines,
and the speech step of a say: scenario cold vs cached.

    python -m bench.tts_bench                 # ~1-2 min; prints a table, writes bench/results/tts-<date>.json
    python -m bench.tts_bench --quick         # 3 lines, for a smoke check

Speed is seconds of speech per CPU second with the process pinned to one core (engine CPU includes
espeak-ng's child process). WER: every line x caller variant is streamed in 20 ms chunks through the
simulator's own input path (harness.simulator.vad_stream.InputAudio: server VAD, then the
fingerprint transcriber on each committed segment), exactly what the embedded simulator does to a
session's audio; the transcripts are scored with harness.metrics.word_error_rate.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from harness import audio  # noqa: E402
from harness.metrics import word_error_rate  # noqa: E402
from harness.simulator.transcribe import Transcriber  # noqa: E402
from harness.simulator.vad_stream import InputAudio  # noqa: E402
from harness.tts.cache import Line, SpeechCache  # noqa: E402
from harness.tts.engines import Engines, Voice, cpu_seconds, piper_available  # noqa: E402
from harness.tts.render import Caller  # noqa: E402
from harness.vad import VadParams  # noqa: E402

LINES = [
    "I was charged twice for order 4417.",
    "Please refund the second payment.",
    "I can't log in to my account.",
    "Navigate to the nearest charging station.",
    "Turn the temperature down two degrees.",
    "Can I speak to a real person please?",
    "My flight was cancelled and I need a new booking.",
    "What is the balance on my savings account?",
    "The package arrived damaged, I want a replacement.",
    "Yesterday I go to the market, is that correct?",
]
CALLERS = {
    "clean": Caller(),
    "car@10dB": Caller(noise="car", snr_db=10),
    "babble@10dB": Caller(noise="babble", snr_db=10),
    "pink@5dB": Caller(noise="pink", snr_db=5),
    "g711": Caller(channel="g711"),
    "car@10dB+g711": Caller(noise="car", snr_db=10, channel="g711"),
}
RATES = (0.85, 1.0, 1.2)


def speed(engine: str, voice: str, lines: list[str]) -> dict[str, float]:
    engines = Engines()
    eng = engines.get(engine)
    eng.check(voice)
    eng.synthesize("Warm up.", voice, 1.0)  # model load is a one-off, not synthesis speed
    c0, w0 = cpu_seconds(), time.perf_counter()
    speech = 0.0
    for text in lines:
        x, rate = eng.synthesize(text, voice, 1.0)
        speech += len(x) / rate
    cpu, wall = cpu_seconds() - c0, time.perf_counter() - w0
    return {"speech_s": round(speech, 2), "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "speech_per_cpu_s": round(speech / cpu, 1), "speech_per_wall_s": round(speech / wall, 1)}


def simulate(samples, t: Transcriber) -> str:
    """What the simulator transcribes of one utterance: its VAD segments, each through the transcriber."""
    fmt = audio.input_format("pcm16")
    x = np.concatenate([np.zeros(audio.BASE_RATE // 2, np.int16), samples, np.zeros(audio.BASE_RATE * 2, np.int16)])
    ia = InputAudio(fmt, VadParams(), keep_audio=True)
    texts, start = [], None
    for i in range(0, len(x), 480):
        for ev in ia.append(base64.b64encode(x[i:i + 480].tobytes()), 0, 0):
            if ev.kind == "started":
                start = ev.audio_ms
            elif start is not None:
                texts.append(t.transcribe(ia.segment(start, ev.speech_ms), audio.BASE_RATE, random.Random(0)).text)
                start = None
    return " ".join(texts)


def wer_table(engine: str, voice: str, lines: list[str], cache_dir: Path) -> dict[str, Any]:
    cache = SpeechCache(cache_dir / engine, Engines())
    made = {(text, rate, name): cache.get(Line(text=text, voice=Voice(engine, voice), rate=rate, caller=c))
            for text in lines for rate in RATES for name, c in CALLERS.items()}
    t = Transcriber("audio_fixtures", (str(cache.dir),))
    t.preload()
    by_caller: dict[str, list[float]] = {name: [] for name in CALLERS}
    by_rate: dict[float, list[float]] = {r: [] for r in RATES}
    for (text, rate, name), fx in made.items():
        w = word_error_rate(text, simulate(fx.samples(), t))
        by_caller[name].append(w)
        by_rate[rate].append(w)
    every = [w for ws in by_caller.values() for w in ws]
    return {"lines": len(made), "wer_mean": round(statistics.fmean(every), 4),
            "exact": round(sum(w == 0 for w in every) / len(every), 3),
            "by_caller": {k: round(statistics.fmean(v), 4) for k, v in by_caller.items()},
            "by_rate": {str(k): round(statistics.fmean(v), 4) for k, v in by_rate.items()}}


def cold_vs_cached(tmp: Path) -> dict[str, float]:
    """The speech step of scenarios/say_smoke.yaml (3 lines x 8 callers) on an empty cache, then again."""
    from harness.scenario import load_scenario
    from harness.tts.prepare import prepare_speech

    shutil.copy(ROOT / "scenarios" / "say_smoke.yaml", tmp / "say_smoke.yaml")
    out = {}
    for label in ("cold", "cached"):
        sc = load_scenario(tmp / "say_smoke.yaml")
        t0 = time.perf_counter()
        done = prepare_speech(sc)
        out[f"{label}_s"] = round(time.perf_counter() - t0, 3)
        out[f"{label}_synthesised"] = done.synthesised
    out["lines"] = done.lines
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cpu", type=int, default=0, help="pin to this core (default 0)")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    lines = LINES[:3] if args.quick else LINES
    engines = []
    if piper_available():
        engines.append(("piper", "en_US-joe-medium"))
    if shutil.which("espeak-ng"):
        engines.append(("espeak", "en-us"))
    result: dict[str, Any] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "cpus": os.cpu_count(), "engines": {}}
    with tempfile.TemporaryDirectory(prefix="voiceload-tts-bench-") as tmp:
        for engine, voice in engines:
            result["engines"][engine] = {"voice": voice, "speed": speed(engine, voice, lines),
                                         "simulator_wer": wer_table(engine, voice, lines, Path(tmp))}
        if piper_available():
            result["say_smoke_speech_step"] = cold_vs_cached(Path(tmp))
    print(json.dumps(result, indent=2))
    if not args.quick:
        out = ROOT / "bench" / "results" / f"tts-{dt.date.today().isoformat()}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
