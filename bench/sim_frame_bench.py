"""CPU per streamed 20 ms frame in the simulator's receive path, in process (no sockets).

N SimSessions (the bench's simulator profile: ideal, vad_batch_ms 100, server VAD and input
transcription on) each get one ``input_audio_buffer.append`` per tick - fixture speech, then
silence - in the order ``data_received`` hands them over, and (where the tree has it) the
server's cross-session VAD pass (vad_pass.py) runs after each tick's messages, as the event loop
runs it after a pass's reads. Returned actions are counted, not executed (no socket, no timers).
The figure is process CPU time / frames; wall time is not used (the machine is shared).

    python bench/sim_frame_bench.py --trees /tmp/base . --rounds 7   # alternating A/B, medians
    python bench/sim_frame_bench.py --once                           # one measurement of this tree
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

FIXTURES = ("cs_double_charge", "car_eta", "cs_order_status", "tutor_en_restaurant", "car_temperature")
FRAME_MS = 20


class _Link:
    """The server's _Link as the VAD pass sees it: actions are counted."""

    def __init__(self, session) -> None:
        self.session, self.closed, self.actions = session, False, 0

    def dispatch(self, actions: list) -> None:
        self.actions += len(actions)


def measure(sessions: int, ticks: int, warmup: int) -> dict:
    """Run in the tree on sys.path: µs of process CPU per appended frame."""
    from harness import audio, fixtures
    from harness.protocol import events as ev
    from harness.simulator.profiles import load_profile
    from harness.simulator.replies import select_replies
    from harness.simulator.reply_bank import ReplyBank
    from harness.simulator.session import SessionSetup, SimSession, SimStats
    from harness.simulator.transcribe import Transcriber

    profile = load_profile("ideal", {"vad_batch_ms": 100})
    fmt = audio.input_format("pcm16", 24000)
    silence = ev.append_message(fixtures.silence_frames(fmt, FRAME_MS, count=1)[0])
    # One talk cycle: an utterance, then 1.5 s of silence (the reply plays meanwhile).
    cycles = [[ev.append_message(f) for f in fixtures.frames(fx, fmt, FRAME_MS).frames] + [silence] * 75
              for fx in FIXTURES]
    bank = ReplyBank(select_replies(None, profile.replies, profile.source))
    transcriber = Transcriber("audio_fixtures")
    stats = SimStats()
    update = json.dumps(ev.session_update({"input_audio_transcription": {"model": "azure-speech"},
                                           "turn_detection": {"type": "server_vad"}})).encode()
    try:
        from harness.simulator.vad_pass import VadPass
    except ImportError:  # a tree from before the cross-session VAD
        VadPass = None  # type: ignore[assignment,misc]
    scheduled: list = []
    vad_pass = VadPass(scheduled.append) if VadPass is not None else None
    extra = {"defer_vad": True} if vad_pass is not None else {}
    sess, streams, links = [], [], []
    now = time.monotonic_ns()
    for i in range(sessions):
        setup = SessionSetup(api_version="2026-07-15", model="gpt-realtime", agent=None, session_index=i, seed=1,
                             profile=profile, bank=bank, transcriber=transcriber, stats=stats, **extra)
        s = SimSession(setup, time.time_ns())
        s.start(now)
        s.receive(update, now, time.time_ns())
        sess.append(s)
        links.append(_Link(s))
        stream = [m for k in range(len(FIXTURES)) for m in cycles[(i + k) % len(FIXTURES)]]
        off = (i * 37) % len(stream)
        streams.append(stream[off:] + stream[:off])
    actions = 0

    def run(t0: int, t1: int) -> None:
        nonlocal actions
        mono = time.monotonic_ns()
        for t in range(t0, t1):
            mono += FRAME_MS * 1_000_000
            wall = mono
            for s, stream, link in zip(sess, streams, links):
                out = s.receive(stream[t % len(stream)], mono, wall)
                if out:
                    actions += len(out)
                if vad_pass is not None and s.input.due:
                    vad_pass.add(link)
            while scheduled:
                scheduled.pop(0)()
            for link in links:
                actions += link.actions
                link.actions = 0
            for s in sess:  # a response ends on its own in the server; here: drop it (no timers run)
                s.response = None

    run(0, warmup)
    c0 = time.process_time()
    run(warmup, warmup + ticks)
    cpu = time.process_time() - c0
    frames = sessions * ticks
    return {"sessions": sessions, "frames": frames, "cpu_s": round(cpu, 4),
            "us_per_frame": round(cpu / frames * 1e6, 3), "actions": actions, "turns": stats.turns_committed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--ticks", type=int, default=500, help="20 ms ticks measured (500 = 10 s of audio)")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--once", action="store_true", help="measure this tree once, print JSON")
    p.add_argument("--trees", nargs="+", default=None, help="source trees to compare, run alternately")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="bench/results/sim_frame_bench.json")
    args = p.parse_args(argv)
    if args.once or not args.trees:
        print(json.dumps(measure(args.sessions, args.ticks, args.warmup)))
        return 0
    runs: dict[str, list[dict]] = {t: [] for t in args.trees}
    for r in range(args.rounds):
        for tree in args.trees if r % 2 == 0 else list(reversed(args.trees)):
            root = Path(tree).resolve()
            env = dict(os.environ, PYTHONPATH=str(root))
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--once", "--sessions",
                                  str(args.sessions), "--ticks", str(args.ticks), "--warmup", str(args.warmup)],
                                 cwd=root, env=env, capture_output=True, text=True, timeout=600, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            runs[tree].append(row)
            print(tree, json.dumps(row), flush=True)
    summary = {t: statistics.median(r["us_per_frame"] for r in rows) for t, rows in runs.items()}
    first = args.trees[0]
    doc = {"sessions": args.sessions, "ticks": args.ticks, "rounds": args.rounds,
           "median_us_per_frame": summary,
           "ratio_vs_first": {t: round(v / summary[first], 3) for t, v in summary.items()}, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: doc[k] for k in ("median_us_per_frame", "ratio_vs_first")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
