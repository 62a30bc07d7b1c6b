"""VAD decisions on every fixture, as recorded from main before the simulator's VAD was optimised.

``python tests/vad_golden.py`` rewrites tests/data/vad_golden.json; tests/test_vad_golden.py
recomputes everything and asserts equality, so a faster VAD can never move a fixture's bounds.
Recorded: harness.vad.speech_bounds (offline), StreamingVad events fed 20 ms chunks (with the
instant each decision was made), and the simulator's InputAudio events fed the base64 frames a
caller sends (two wire formats, three VAD batch sizes), followed by room tone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from harness import audio
from harness.fixtures import frames, load_manifest, silence_frames
from harness.simulator.vad_stream import InputAudio
from harness.vad import StreamingVad, VadParams, speech_bounds

GOLDEN = Path(__file__).resolve().parent / "data" / "vad_golden.json"
FORMATS = ("pcm16", "g711_ulaw")
BATCHES_MS = (20, 60, 100)
TAIL_FRAMES = 75  # 1.5 s of room tone after the fixture: every run closes


def offline(fid: str) -> list[int] | None:
    b = speech_bounds(load_manifest()[fid].samples(), 24000)
    return list(b) if b else None


def streaming(fid: str) -> list[list]:
    x = load_manifest()[fid].samples()
    vad = StreamingVad(24000, VadParams())
    out = []
    for i in range(0, len(x), 480):
        out += vad.feed(x[i : i + 480])
    out += vad.feed(np.zeros(24000, np.int16))
    return [[e.kind, e.audio_ms, e.speech_ms, e.decided_at_ms] for e in out]


def simulator(fid: str, fmt_name: str, batch_ms: int) -> list[list]:
    fmt = audio.input_format(fmt_name) if hasattr(audio, "input_format") else audio.output_format(fmt_name)
    chunks = frames(fid, fmt, 20).frames + silence_frames(fmt, 20, -60.0, seed=1, count=TAIL_FRAMES)
    buf = InputAudio(fmt, VadParams(), batch_ms)
    out = []
    for k, b64 in enumerate(chunks):
        out += buf.append(b64, k, k)
    out += buf.flush()
    return [[e.kind, e.audio_ms, e.speech_ms] for e in out]


def compute() -> dict:
    data: dict = {}
    for fid in sorted(load_manifest()):
        data[fid] = {"offline": offline(fid), "streaming": streaming(fid),
                     **{f"sim/{f}/{b}": simulator(fid, f, b) for f in FORMATS for b in BATCHES_MS}}
    return data


if __name__ == "__main__":
    rows = [f" {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(compute().items())]
    GOLDEN.write_text("{\n" + ",\n".join(rows) + "\n}\n")
    print(f"wrote {GOLDEN}", file=sys.stderr)
