"""``python -m bench.pacing_bench``: CPU per frame of the pacing machinery alone (no sockets).

N mics stream room tone to a send that does nothing, one process pinned to one core; CPU time
(user+sys) over a window divided by the frames that went out. Designs, in alternating runs:
``greenlet-bare`` (the waiting scheme of the pacer before 2026-11-30: a greenlet per mic sleeping on
a fresh libev timer to each deadline, nothing else), ``timer-bare`` (one repeating libev timer per
mic whose callback only counts), ``mic`` (harness.client.pacer.Mic with all its bookkeeping), and
with ``--old-pacer FILE`` (e.g. ``git show b441f08:harness/client/pacer.py > /tmp/old.py``) that
file's Mic as ``mic-old``. Writes bench/results/pacing-<date>.json; medians are printed.

    python -m bench.pacing_bench [--mics 1000] [--rounds 3] [--window 5] [--old-pacer FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.stats import write_result

ROOT = Path(__file__).resolve().parents[1]
CHUNK_MS = 20


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _one(design: str, mics: int, window_s: float, old_pacer: str | None) -> dict:
    """Runs in a child process: start ``mics`` mics, measure ``window_s`` after a 1 s warm-up."""
    import gevent

    if design == "mic-old":  # load the older module under the engine's name before anything imports it
        import importlib.util

        import harness.client  # noqa: F401

        spec = importlib.util.spec_from_file_location("harness.client.pacer", old_pacer)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["harness.client.pacer"] = mod
        spec.loader.exec_module(mod)
    from harness.client.pacer import NS, Mic

    frames = [0]

    def send(_data: bytes, _block: bool = True) -> bool:
        frames[0] += 1
        return True

    def greenlet_mic(phase_ns: int) -> None:  # the previous design, kept here to compare against
        hub = gevent.get_hub()
        new_timer, switch, me = hub.loop.timer, hub.switch, gevent.getcurrent()
        mono, c_ns = time.monotonic_ns, CHUNK_MS * NS
        t0, k = mono() + phase_ns, 0
        while True:
            deadline, now = t0 + (k + 1) * c_ns, mono()
            while deadline > now:
                timer = new_timer((deadline - now) / 1e9)
                timer.start(me.switch, update=True)
                try:
                    switch()
                finally:
                    timer.close()
                now = mono()
            send(b"")
            k += 1

    def count() -> None:
        frames[0] += 1

    silence = tuple(b"%d" % i for i in range(50))
    running: list = []
    if design == "greenlet-bare":
        running = [gevent.spawn(greenlet_mic, i * CHUNK_MS * NS // mics) for i in range(mics)]
    elif design == "timer-bare":
        loop = gevent.get_hub().loop
        for i in range(mics):
            timer = loop.timer(CHUNK_MS / 1000 * (1 + i / mics), CHUNK_MS / 1000)
            timer.start(count, update=True)
            running.append(timer)
    else:
        for i in range(mics):  # phases spread over a chunk, as sessions that started at different times
            m = Mic(send, silence, CHUNK_MS)
            gevent.sleep(CHUNK_MS / 1000 / mics)
            m.start()
            running.append(m)
    gevent.sleep(1.0)
    f0, c0, t0 = frames[0], _cpu_s(), time.monotonic()
    gevent.sleep(window_s)
    f1, c1, t1 = frames[0], _cpu_s(), time.monotonic()
    lateness = None
    if design.startswith("mic"):
        from harness.histogram import MsHistogram

        h = MsHistogram()
        for m in running:
            h.merge(m.stats)
        lateness = {"p50": h.percentile(50), "p99": h.percentile(99), "max": round(h.max_ms, 3)}
    return {"design": design, "mics": mics, "frames_per_s": round((f1 - f0) / (t1 - t0)),
            "expected_frames_per_s": mics * 1000 // CHUNK_MS,
            "us_per_frame": round((c1 - c0) / max(1, f1 - f0) * 1e6, 3),
            "cpu_pct": round(100 * (c1 - c0) / (t1 - t0), 1), "lateness_ms": lateness}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mics", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--old-pacer", help="a previous harness/client/pacer.py to compare (design mic-old)")
    ap.add_argument("--child", nargs=2, metavar=("DESIGN", "MICS"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(_one(a.child[0], int(a.child[1]), a.window, a.old_pacer)))
        return 0
    designs = ["greenlet-bare", "timer-bare", "mic"] + (["mic-old"] if a.old_pacer else [])
    runs: list[dict] = []
    for _ in range(a.rounds):
        for design in designs:
            cmd = [sys.executable, "-m", "bench.pacing_bench", "--window", str(a.window), "--child", design, str(a.mics)]
            if a.old_pacer:
                cmd += ["--old-pacer", os.path.abspath(a.old_pacer)]
            if hasattr(os, "sched_setaffinity"):
                cmd = ["taskset", "-c", "0", *cmd]
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=a.window + 60)
            if out.returncode != 0:
                raise SystemExit(f"pacing bench child failed: {out.stderr[-2000:]}")
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(runs[-1])
    med = {d: statistics.median(r["us_per_frame"] for r in runs if r["design"] == d) for d in designs}
    result = {"date": dt.date.today().isoformat(), "mics": a.mics, "chunk_ms": CHUNK_MS, "window_s": a.window,
              "us_per_frame_median": med, "runs": runs}
    path = write_result("pacing", result)
    print(f"pacing at {a.mics} mics, CPU µs per frame (medians of {a.rounds}): "
          + ", ".join(f"{d} {v}" for d, v in med.items()) + f" → {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
