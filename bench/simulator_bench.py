"""Capacity of one simulator process on one core: N sessions streaming 20 ms frames in real time.

For each N the simulator starts fresh as a child process pinned to one CPU; a lean asyncio client
(this file, ``--client``) pinned to another CPU opens N sessions with server VAD and input
transcription on, and each session speaks fixtures in a loop: the utterance, then silence until its
response is done (the microphone never stops, as in a real call). Reported per N: the simulator's
event-loop lag p50/p99/max (its own lag monitor), its CPU % (psutil), turns completed, the client's
own send lateness (if the client falls behind, the offered load was lower than claimed), and the
scheduling error of the first audio delta vs. the injected delay, read from the truth log.

    python bench/simulator_bench.py                    # 100 200 300 400 sessions, 30 s each
    python bench/simulator_bench.py --quick            # CI smoke: 20 sessions, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURES = ("cs_double_charge", "car_eta", "cs_order_status", "tutor_en_restaurant", "car_temperature")
FRAME_MS = 20
SILENCE_AFTER_DONE_MS = 600


# --- client (runs in its own process) -----------------------------------------------------------


async def _client(url: str, sessions: int, duration_s: float, ramp_s: float, out_path: str) -> None:
    import numpy as np
    from websockets.asyncio.client import connect

    from harness import audio, fixtures
    from harness.protocol import events as ev

    fmt = audio.input_format("pcm16", 24000)
    utterances = [tuple(ev.append_message(f).decode() for f in fixtures.frames(fx, fmt, FRAME_MS).frames)
                  for fx in FIXTURES]
    silence = ev.append_message(fixtures.silence_frames(fmt, FRAME_MS, count=1)[0]).decode()
    update = json.dumps(ev.session_update({"input_audio_transcription": {"model": "azure-speech"},
                                           "turn_detection": {"type": "server_vad"}}))
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + ramp_s + duration_s
    state = {"turns": 0, "responses_started": 0, "errors": 0, "connect_fail": 0}
    late: list[float] = []

    async def one(i: int) -> None:
        await asyncio.sleep(ramp_s * i / max(1, sessions))
        try:
            ws = await connect(url, compression=None, max_size=2**24, open_timeout=30, ping_interval=None)
        except Exception:
            state["connect_fail"] += 1
            return
        done = asyncio.Event()

        async def reader() -> None:
            try:
                async for msg in ws:
                    head = msg[:48]
                    if '"response.done"' in head:
                        if '"completed"' in msg[:200] or '"status":"completed"' in msg:
                            state["turns"] += 1
                        done.set()
                    elif '"response.created"' in head:
                        state["responses_started"] += 1
                    elif '"type":"error"' in head:
                        state["errors"] += 1
            except Exception:
                pass

        rt = asyncio.create_task(reader())
        await ws.send(update)
        conn = ws
        t_next = loop.time()
        k = i
        try:
            while loop.time() < stop_at:
                done.clear()
                frames = utterances[k % len(utterances)]
                k += 1
                sent_speech = 0
                quiet_until = None
                while loop.time() < stop_at:
                    if sent_speech < len(frames):
                        msg = frames[sent_speech]
                        sent_speech += 1
                    else:
                        msg = silence
                        if done.is_set() and quiet_until is None:
                            quiet_until = t_next + SILENCE_AFTER_DONE_MS / 1000
                        if quiet_until is not None and t_next >= quiet_until:
                            break
                    # The protocol object queues the frame; send_data() writes it: no await per frame.
                    conn.protocol.send_text(msg.encode())
                    conn.send_data()
                    t_next += FRAME_MS / 1000
                    delay = t_next - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    elif len(late) < 2_000_000:
                        late.append(-delay * 1000)
        finally:
            await ws.close()
            rt.cancel()

    await asyncio.gather(*(one(i) for i in range(sessions)))
    lat = np.array(late or [0.0])
    state["client_late_frames"] = len(late)
    state["client_late_p99_ms"] = round(float(np.percentile(lat, 99)), 2)
    state["client_late_max_ms"] = round(float(lat.max()), 2)
    Path(out_path).write_text(json.dumps(state))


def client_main(args: argparse.Namespace) -> int:
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(_client(args.url, args.sessions, args.duration, args.ramp, args.out))
    return 0


# --- orchestration ------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return round(float(np.percentile(values, q)), 2)


def _renice(pid: int, nice: int | None) -> None:
    """Shield the measurement from neighbours on a shared machine (negative values need root)."""
    if nice is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except (PermissionError, OSError):
        pass


def run_one(n: int, duration: float, ramp: float, profile: str, sim_cpu: int | None, client_cpu: int | None,
            nice: int | None = None) -> dict:
    import psutil

    from harness.simulator import SimulatorProcess
    from harness.simulator.truth import read_truth

    with tempfile.TemporaryDirectory() as tmp:
        truth = os.path.join(tmp, "truth.jsonl")
        out = os.path.join(tmp, "client.json")
        # A benchmark measures the simulator, not a resource's quota: never throttled.
        with SimulatorProcess(profile=profile, truth_log=truth, cpu=sim_cpu, seed=1,
                              overrides={"quotas": "none"}) as sim:
            proc = psutil.Process(sim.pid)
            _renice(sim.pid, nice)
            cmd = [sys.executable, __file__, "--client", "--url",
                   f"{sim.url}/voice-live/realtime?api-version=2026-07-15&model=gpt-realtime",
                   "--sessions", str(n), "--duration", str(duration), "--ramp", str(ramp), "--out", out]
            if client_cpu is not None:
                cmd += ["--cpu", str(client_cpu)]
            client = subprocess.Popen(cmd)
            _renice(client.pid, nice)
            cproc = psutil.Process(client.pid)
            time.sleep(ramp + 2.0)  # measure CPU over the steady state only
            c0, k0, s0, t0 = proc.cpu_times(), cproc.cpu_times(), psutil.cpu_times(), time.monotonic()
            time.sleep(max(1.0, duration - 4.0))
            c1, k1, s1, t1 = proc.cpu_times(), cproc.cpu_times(), psutil.cpu_times(), time.monotonic()
            client.wait(timeout=duration + ramp + 120)
        stats = sim.final_stats or {}
        cl = json.loads(Path(out).read_text()) if os.path.exists(out) else {}
        lines = read_truth(truth) if os.path.exists(truth) else []
    span = max(1e-9, t1 - t0)
    cpu = ((c1.user + c1.system) - (c0.user + c0.system)) / span * 100
    client_cpu = ((k1.user + k1.system) - (k0.user + k0.system)) / span * 100
    busy = lambda c: c.user + c.nice + c.system + getattr(c, "irq", 0) + getattr(c, "softirq", 0)  # noqa: E731
    other = (busy(s1) - busy(s0)) / span * 100 - cpu - client_cpu  # other processes on the machine
    sched = [(t["first_audio_sent_mono_ns"] - t["speech_stopped_sent_mono_ns"]) / 1e6 - t["injected_delay_ms"]
             for t in lines if t.get("first_audio_sent_mono_ns") and t.get("speech_stopped_sent_mono_ns")]
    vad_lag = [(t["speech_stopped_sent_mono_ns"] - t["speech_end_recv_mono_ns"]) / 1e6
               for t in lines if t.get("speech_stopped_sent_mono_ns") and t.get("speech_end_recv_mono_ns")]
    lag = stats.get("loop_lag_ms", {})
    return {
        "sessions": n, "duration_s": duration, "profile": profile,
        "loop_lag_p50_ms": lag.get("p50"), "loop_lag_p99_ms": lag.get("p99"), "loop_lag_max_ms": lag.get("max"),
        "cpu_percent": round(cpu, 1), "client_cpu_percent": round(client_cpu, 1),
        "other_processes_cpu_percent": round(max(0.0, other), 1), "turns_completed": cl.get("turns"),
        "responses": stats.get("responses"), "responses_by_status": stats.get("responses_by_status"),
        "appends": stats.get("appends"), "sessions_total": stats.get("sessions_total"),
        "connect_fail": cl.get("connect_fail"), "client_errors": cl.get("errors"),
        "client_late_p99_ms": cl.get("client_late_p99_ms"), "client_late_max_ms": cl.get("client_late_max_ms"),
        "first_audio_sched_err_p50_ms": _pct(sched, 50), "first_audio_sched_err_p99_ms": _pct(sched, 99),
        "speech_end_to_stopped_p50_ms": _pct(vad_lag, 50), "speech_end_to_stopped_p99_ms": _pct(vad_lag, 99),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url")
    p.add_argument("--out")
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--sessions", type=int, nargs="+", default=[100, 200, 300, 400])
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--ramp", type=float, default=5.0)
    p.add_argument("--profile", default="realistic")
    p.add_argument("--quick", action="store_true", help="CI smoke: 20 sessions for a few seconds")
    p.add_argument("--nice", type=int, default=-10 if hasattr(os, "geteuid") and os.geteuid() == 0 else None,
                   help="niceness of the simulator and the client (default -10 as root: neighbours on a shared "
                        "machine must not be what is measured)")
    p.add_argument("--no-write", action="store_true", help="do not write bench/results/")
    args = p.parse_args(argv)
    if args.client:
        args.sessions = args.sessions[0]
        return client_main(args)
    ncpu = os.cpu_count() or 1
    sim_cpu, client_cpu = (1, 0) if ncpu >= 2 else (None, None)
    if args.quick:
        args.sessions, args.duration, args.ramp = [20], 7.0, 1.0
    rows = []
    for n in args.sessions:
        row = run_one(n, args.duration, args.ramp, args.profile, sim_cpu, client_cpu, args.nice)
        row["nice"] = args.nice
        rows.append(row)
        print(json.dumps(row), flush=True)
    hdr = (f"{'sessions':>8} {'lag p50':>8} {'lag p99':>8} {'lag max':>8} {'cpu %':>6} {'turns':>6} "
           f"{'cl late p99':>11} {'sched p99':>9} {'others %':>8}")
    print(hdr)
    for r in rows:
        print(f"{r['sessions']:>8} {r['loop_lag_p50_ms']!s:>8} {r['loop_lag_p99_ms']!s:>8} {r['loop_lag_max_ms']!s:>8} "
              f"{r['cpu_percent']!s:>6} {r['turns_completed']!s:>6} {r['client_late_p99_ms']!s:>11} "
              f"{r['first_audio_sched_err_p99_ms']!s:>9} {r['other_processes_cpu_percent']!s:>8}")
    if not args.no_write and not args.quick:
        out = ROOT / "bench" / "results" / f"simulator-{dt.date.today().isoformat()}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = json.loads(out.read_text()) if out.exists() else {}
        doc["simulator"] = {"machine": {"cpus": ncpu, "python": sys.version.split()[0]},
                            "sim_cpu": sim_cpu, "client_cpu": client_cpu, "frame_ms": FRAME_MS, "rows": rows}
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
