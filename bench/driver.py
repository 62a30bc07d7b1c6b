"""The harness side of one bench step, run as its own process pinned to one core.

A lean driver built from the engine's ``CallerSession`` (not ``LoadRunner``): it needs a
measurement window, which a load shape does not have. N callers start staggered over the ramp
(so their 20 ms frame phases are spread), each speaks a long conversation; after the ramp and a
settle period every session's lateness histogram and kernel-stamp list are reset, CPU/RSS are
snapshot, and after the window everything is read back. Turns whose speech ended in the window are
kept when they finish (a short grace period); then the process exits without a goodbye, so the
shutdown of 1000 sockets never lands in anyone's numbers.

    python -m bench.driver '<json config>'
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import random
import sys
import time
from pathlib import Path

from bench import stats as S
from harness.histogram import MsHistogram

ROOT = Path(__file__).resolve().parents[1]


def _scenario(path: str, repeats: int):
    from harness.scenario import load_scenario

    sc = load_scenario(ROOT / path)
    base = [dataclasses.replace(t, expect=type(t.expect)()) for t in sc.conversation]
    # One linear script: each copy gets its own ``next`` (harness/branching.py), else every session
    # would end after the first pass through the scenario's turns.
    conv = [dataclasses.replace(t, next=i + 1 if i + 1 < len(base) * repeats else None)
            for i, t in enumerate(base * repeats)]
    load = dataclasses.replace(sc.load, turn_timeout_s=15.0, max_pacing_lag_ms=10.0)
    return dataclasses.replace(sc, conversation=conv, load=load)


def _warm(sc) -> None:
    """Build every shared frame set before the RSS baseline: they are per process, not per session."""
    from harness import audio, fixtures
    from harness.client.session import _messages

    s = sc.session
    fmt = audio.input_format(s.get("input_audio_format", "pcm16"), s.get("input_audio_sampling_rate"))
    a = sc.audio
    _messages(fixtures.silence_frames(fmt, a.chunk_ms, a.room_tone_dbfs, seed=0))
    for t in {t.fixture for t in sc.conversation}:
        _messages(fixtures.frames(t, fmt, a.chunk_ms, gain_db=a.perturb.gain_db, snr_db=a.perturb.snr_db,
                                  seed=0).frames)
    fixtures.load_manifest(sc.fixtures_dir)


def _preload(modules: dict[str, str]) -> None:
    """A/B runs: load e.g. an older ``harness.client.transport`` from a file before the engine imports it."""
    import importlib.util

    import harness.client  # noqa: F401  (the parent package must exist first)

    for name, path in modules.items():
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)


def run(cfg: dict) -> dict:
    S.pin(cfg.get("cpu"))
    os.chdir(ROOT)
    if cfg.get("preload"):
        _preload(cfg["preload"])
    import gevent

    from harness.client.endpoints import embedded_endpoint
    from harness.client.pacer import LAG
    from harness.client.session import CallerSession, SessionOptions
    from harness.client.transport import WALL_MINUS_MONO_NS

    from harness.client import transport

    transport.EVENT_STAMP = cfg.get("event_stamp", "kernel")
    sc = _scenario(cfg.get("scenario", "scenarios/smoke.yaml"), cfg.get("repeats", 30))
    _warm(sc)
    endpoint = embedded_endpoint("bench", cfg["url"], cfg.get("ca_file"))
    n = int(cfg["sessions"])
    stopping = False
    rng = random.Random(cfg.get("seed", 1))
    records: list = []
    sessions: list[CallerSession] = []

    def one(i: int) -> None:
        gevent.sleep(cfg["ramp_s"] * i / n)
        opts = SessionOptions(run_id="bench", worker="bench", session_id=f"b{i}", seed=i,
                              kernel_stamps=cfg.get("kernel_stamps", True), on_record=records.append,
                              active_sessions=lambda: n, stopping=lambda: stopping)
        # A random first pause spreads the turn phases (not just the frame phases) over a whole turn
        # cycle, so responses do not arrive in lockstep bursts; the mic streams silence meanwhile.
        first = dataclasses.replace(sc.conversation[0], pause_ms=rng.randrange(cfg.get("spread_ms", 7000)))
        s = CallerSession(dataclasses.replace(sc, conversation=[first, *sc.conversation[1:]]), endpoint, opts)
        sessions.append(s)
        s.run()

    gc_mode = cfg.get("gc", "realtime")  # realtime | freeze (startup heap only) | default
    if gc_mode != "default":
        from harness.client.gcmode import realtime_gc

        realtime_gc(5.0 if gc_mode == "realtime" else None)
    if cfg.get("gc_threshold"):
        gc.set_threshold(*cfg["gc_threshold"])
    gc.collect()
    gcp = S.GcPauses()
    rss_base = S.rss_bytes()
    win = S.Window(cfg.get("cpu"), cfg.get("sim_pid"), cfg.get("sim_cpu"))
    greenlets = [gevent.spawn(one, i) for i in range(n)]
    gevent.sleep(cfg["ramp_s"] + cfg["settle_s"])

    # -- window ---------------------------------------------------------------------------------
    for s in sessions:
        if s.mic is not None:
            st = s.mic.stats
            if hasattr(st, "reset"):
                st.reset()
            else:  # an older engine (A/B runs)
                s.mic.stats = type(st)()
        if s.transport is not None:
            s.transport.stamp_delays.reset()
    w0 = time.monotonic_ns()
    win.start(w0 / 1e9)
    gcp.on = True
    gevent.sleep(cfg["window_s"])
    gcp.on = False
    w1 = time.monotonic_ns()
    res = win.end(w1 / 1e9)
    res.update(gcp.summary())
    # Copy (C-speed) now, compute after the grace period: a Python loop over 1000 histograms here
    # would stall the loop for tens of ms and flag the turns still in flight as invalid.
    snaps, stamp_snaps = [], []
    for s in sessions:
        if s.mic is not None and s.mic.alive:
            snaps.append(s.mic.stats.copy())
        if s.transport is not None:
            stamp_snaps.append(s.transport.stamp_delays.copy())
    lags = [lag for t, lag in LAG.samples if w0 <= t <= w1]
    gevent.sleep(cfg["grace_s"])  # let turns that ended speech in the window finish
    stopping = True
    late, stamps, live = MsHistogram(), MsHistogram(), len(snaps)
    for h in snaps:
        late.merge(h)
    for h in stamp_snaps:
        stamps.merge(h)
    res["gc_tracked_per_session"] = round(len(gc.get_objects()) / n, 1)
    if gc_mode == "realtime" and cfg.get("diag"):
        gc.unfreeze()
        res["gc_garbage_found"] = gc.collect()  # what periodic freezing would have leaked
        res["turns_total"] = len(records)
    if cfg.get("diag"):
        from collections import Counter

        res["gc_top_types"] = Counter(type(o).__name__ for o in gc.get_objects()).most_common(40)
        res["lag_spikes"] = sorted(((t - w0) / 1e6, lag) for t, lag in LAG.samples if w0 <= t <= w1 and lag > 5)
        res["gc_spikes"] = [((a - w0) / 1e6, g, ms) for a, (g, ms) in zip(gcp.at, gcp.pauses) if ms > 3]

    lo, hi = (w0 + WALL_MINUS_MONO_NS) / 1e9, (w1 + WALL_MINUS_MONO_NS) / 1e9
    turns = [{k: getattr(r, k) for k in ("response_id", "first_audio_ms", "speech_end_audio_ms", "valid", "t_speech_end",
                                         "complete", "reason", "generator_lag_ms", "pacing_late_max_ms")}
             for r in records if lo <= r.t_speech_end <= hi]
    outcomes: dict[str, int] = {}
    for s in sessions:
        if s.record.outcome != "ok" or s.transport is None or s.transport.closed is not None:
            key = s.record.outcome if s.record.outcome != "ok" else "closed"
            outcomes[key] = outcomes.get(key, 0) + 1
    res.update({
        "sessions": n, "sessions_streaming": live, "session_problems": outcomes,
        "frames": late.n, "frames_per_s": round(late.n / res["window_s"], 1), **late.summary("late"),
        "loop_lag_p99_ms": S.pct(lags, 99), "loop_lag_max_ms": round(max(lags), 3) if lags else None,
        "stamp_reads": stamps.n, **stamps.summary("stamp"),
        "rss_base": rss_base, "turns": turns, "greenlets": len(greenlets),
        "clock": "mono", "w0_ns": w0, "w1_ns": w1, "wall_minus_mono_ns": WALL_MINUS_MONO_NS,
    })
    return res


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    res = run(cfg)
    Path(cfg["out"]).write_text(json.dumps(res))
    sys.stdout.flush()
    os._exit(0)  # no orderly close of N sockets: the simulator sees resets, nobody measures them


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
