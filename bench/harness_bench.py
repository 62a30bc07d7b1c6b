"""One bench step: a fresh simulator on core 1, a load process (harness or baseline) on core 0.

The orchestrator (this process) only starts, waits and joins: the simulator's ground-truth log is
read after it stops, and each turn's ``first_audio_ms`` is compared with it through
``harness.accuracy.compare`` (error = harness − truth). Every step is bounded in time: the child
has a hard timeout and the simulator is always stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import stats as S

ROOT = Path(__file__).resolve().parents[1]
HARNESS_CPU, SIM_CPU = 0, 1

#: The bench simulator: the ideal profile (fixed 200 ms first audio, no faults) with a coarser VAD
#: batch so one simulator core keeps up with the harness core; latencies stay fixed and known.
SIM_PROFILE = "ideal"
SIM_OVERRIDES: dict[str, Any] = {"vad_batch_ms": 100}
#: The smoke conversation (three customer-service turns), repeated so a session outlives the step.
SCENARIO = "scenarios/smoke.yaml"


def split_error(turns: list[dict], truth: list[dict], clock: str, wall_minus_mono_ns: int) -> tuple[list, list]:
    """error = downstream + upstream, both on one host clock (shared/notes §5.4).

    downstream: truth first-audio *send* stamp -> harness arrival stamp (loopback + the load
    process's receive scheduling: the harness's own share). upstream: harness speech-end send ->
    simulator receive stamp, shifted like accuracy.compare (loopback + the simulator's lag).
    """
    from harness.accuracy import comparable

    sfx = "_mono_ns" if clock == "mono" else "_wall_ns"
    by = {t["response_id"]: t for t in truth if t.get("response_id") and t.get("first_audio_sent" + sfx)
          and t.get("speech_end_recv" + sfx) and t.get("speech_end_audio_ms") is not None}
    down, up = [], []
    for rec in turns:
        t = by.get(rec.get("response_id"))
        if not comparable(rec, t):  # the turns accuracy.compare judges, no others
            continue
        end_ns = rec["t_speech_end"] * 1e9 - wall_minus_mono_ns
        down.append((end_ns + rec["first_audio_ms"] * 1e6 - t["first_audio_sent" + sfx]) / 1e6)
        up.append((t["speech_end_recv" + sfx] - end_ns) / 1e6 + rec["speech_end_audio_ms"] - t["speech_end_audio_ms"])
    return down, up


class SinkProcess:
    """``python -m bench.sink`` as a child process (same interface as SimulatorProcess for run_step)."""

    def __init__(self, cpu: int | None, tls_dir: str | None = None):
        self.cpu, self.proc, self.url, self.final_stats = cpu, None, "", None
        self.tls_dir, self.ca_file = tls_dir, None  # wss:// with a fresh local CA written there

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> "SinkProcess":
        cmd = [sys.executable, "-m", "bench.sink"] + (["--cpu", str(self.cpu)] if self.cpu is not None else [])
        if self.tls_dir:
            from harness.tlsconf import self_signed

            files = self_signed(self.tls_dir)
            self.ca_file = files.ca
            cmd += ["--tls-cert", files.cert, "--tls-key", files.key]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        line = self.proc.stdout.readline().decode()  # bounded: the sink prints at once or dies
        if not line.startswith("sink listening on "):
            self.proc.kill()
            raise RuntimeError(f"sink did not start: {line!r}")
        self.url = f"{'wss' if self.tls_dir else 'ws'}://127.0.0.1:{int(line.rsplit(' ', 1)[1])}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _cpus() -> tuple[int | None, int | None]:
    return (HARNESS_CPU, SIM_CPU) if (os.cpu_count() or 1) >= 2 else (None, None)


def run_step(n: int, *, kind: str = "harness", window_s: float = 20.0, settle_s: float = 4.0,
             ramp_s: float | None = None, grace_s: float = 6.0, kernel_stamps: bool = True,
             pacing: str = "naive", preload: dict[str, str] | None = None, nice: int = -10,
             spread_ms: int = 7000, gc: str = "realtime", event_stamp: str = "kernel",
             gc_threshold: list[int] | None = None, server: str = "sim", tls: bool = False) -> dict[str, Any]:
    """Run ``n`` sessions of ``kind`` (harness | baseline) and return the step's row; ``tls``: over
    wss:// (the peer serves TLS with a fresh local CA, the load process trusts exactly that CA)."""
    hcpu, scpu = _cpus()
    ramp_s = ramp_s if ramp_s is not None else max(1.0, n / 100)
    from harness.accuracy import compare, inexact_truth
    from harness.records import read_records
    from harness.simulator import SimulatorProcess

    with tempfile.TemporaryDirectory(prefix="voiceload-bench-") as tmp:
        truth = os.path.join(tmp, "truth.jsonl")
        out = os.path.join(tmp, "out.json")
        sim = (SimulatorProcess(profile=SIM_PROFILE, truth_log=truth, seed=1, overrides=SIM_OVERRIDES, cpu=scpu,
                                tls=tls)
               if server == "sim" else SinkProcess(scpu, os.path.join(tmp, "tls") if tls else None))
        with sim:
            sim_nice = S.boost(sim.pid, nice)
            cfg = {"url": sim.url, "sessions": n, "ramp_s": ramp_s, "settle_s": settle_s, "window_s": window_s,
                   "grace_s": grace_s, "cpu": hcpu, "sim_pid": sim.pid, "sim_cpu": scpu, "kernel_stamps": kernel_stamps,
                   "out": out, "pacing": pacing, "preload": preload, "scenario": SCENARIO, "spread_ms": spread_ms,
                   "gc": gc, "event_stamp": event_stamp, "gc_threshold": gc_threshold, "ca_file": sim.ca_file}
            module = "bench.driver" if kind == "harness" else "bench.baseline"
            budget = ramp_s + settle_s + window_s + grace_s + 60
            t0 = time.monotonic()
            child = subprocess.Popen([sys.executable, "-m", module, json.dumps(cfg)], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            load_nice = S.boost(child.pid, nice)
            try:
                _, err = child.communicate(timeout=budget)
            except subprocess.TimeoutExpired:
                child.kill()
                _, err = child.communicate()
            elapsed = time.monotonic() - t0
        if child.returncode != 0 or not os.path.exists(out):
            tail = err.decode("utf-8", "replace")[-2000:]
            return {"sessions": n, "kind": kind, "server": server, "tls": tls, "failed": True, "error": tail}
        res = json.loads(Path(out).read_text())
        truth_rows = list(read_records(truth)) if os.path.exists(truth) else []
    turns = res.pop("turns")
    valid = [t for t in turns if t["valid"]]
    cmp = compare(valid, truth_rows)
    errs = [c.error_ms for c in cmp]
    abs_errs = [abs(e) for e in errs]
    sim_stats = sim.final_stats or {}
    down, up = split_error(valid, truth_rows, res["clock"], res["wall_minus_mono_ns"])
    sfx = "_mono_ns" if res["clock"] == "mono" else "_wall_ns"
    in_window = [t for t in truth_rows if res["w0_ns"] <= (t.get("speech_end_recv" + sfx) or 0) <= res["w1_ns"]]
    sched = [(t["first_audio_sent_mono_ns"] - t["speech_stopped_sent_mono_ns"]) / 1e6 - t["injected_delay_ms"]
             for t in in_window if t.get("first_audio_sent_mono_ns") and t.get("speech_stopped_sent_mono_ns")
             and t.get("injected_delay_ms") is not None]
    lag = sim_stats.get("loop_lag_ms") or {}
    rss_delta = max(0, res["rss_end"] - res["rss_base"])
    row = {
        "kind": kind, "server": server, "tls": tls, "scheme": "wss" if tls else "ws",
        **({"pacing": pacing} if kind == "baseline" else {}),
        "sessions": n, "sessions_streaming": res.get("sessions_streaming"),
        "session_problems": res.get("session_problems"), "frames_per_s": res.get("frames_per_s"),
        "late_p50_ms": res.get("late_p50_ms"), "late_p99_ms": res.get("late_p99_ms"),
        "late_max_ms": res.get("late_max_ms"),
        "cpu_pct": res["cpu_pct"], "cpu_pct_per_session": round(res["cpu_pct"] / n, 4),
        "cpu_sys_pct": res.get("cpu_sys_pct"),
        "gc_collections": res.get("gc_collections"), "gc_gen2": res.get("gc_gen2"), "gc_max_ms": res.get("gc_max_ms"),
        "gc_tracked_per_session": res.get("gc_tracked_per_session"),
        "rss_base_mb": round(res["rss_base"] / 2**20, 1), "rss_end_mb": round(res["rss_end"] / 2**20, 1),
        "rss_kb_per_session": round(rss_delta / n / 1024, 1),
        "turns": len(turns), "turns_complete": sum(1 for t in turns if t["complete"]),
        "invalid_pct": round(100 * (len(turns) - len(valid)) / len(turns), 2) if turns else None,
        "compared": len(cmp), "truth_inexact": inexact_truth(valid, truth_rows), "err_p50_ms": S.pct(abs_errs, 50), "err_p99_ms": S.pct(abs_errs, 99),
        "err_max_ms": round(max(abs_errs), 3) if abs_errs else None, "err_signed_p50_ms": S.pct(errs, 50),
        "err_down_p50_ms": S.pct(down, 50), "err_down_p99_ms": S.pct(down, 99),
        "err_up_p50_ms": S.pct(up, 50), "err_up_p99_ms": S.pct(up, 99),
        "stamp_reads": res.get("stamp_reads"), "stamp_p50_ms": res.get("stamp_p50_ms"),
        "stamp_p99_ms": res.get("stamp_p99_ms"), "stamp_max_ms": res.get("stamp_max_ms"),
        "loop_lag_p99_ms": res.get("loop_lag_p99_ms"), "loop_lag_max_ms": res.get("loop_lag_max_ms"),
        "core_busy_pct": res.get("core_busy_pct"), "core_others_pct": res.get("core_others_pct"),
        "sim_core_others_pct": res.get("sim_core_others_pct"), "ksoftirqd_pct": res.get("ksoftirqd_pct"),
        "sim_ksoftirqd_pct": res.get("sim_ksoftirqd_pct"), **({"event_stamp": event_stamp, "gc": gc} if kind == "harness" else {}),
        "sim_cpu_pct": res.get("sim_cpu_pct"), "sim_lag_p50_ms": lag.get("p50"), "sim_lag_p99_ms": lag.get("p99"),
        "sim_lag_max_ms": lag.get("max"), "sim_sched_p99_ms": S.pct(sched, 99),
        "sim_responses": sim_stats.get("responses"),
        "drift_ms_per_s": res.get("drift_ms_per_s"), "threads": res.get("threads"),
        "nice": load_nice, "sim_nice": sim_nice,
        "window_s": res["window_s"], "step_s": round(elapsed, 1),
    }
    row["meets_goals"] = bool(row["late_p99_ms"] is not None and row["late_p99_ms"] <= 10.0
                              and row["err_p99_ms"] is not None and row["err_p99_ms"] <= 2.0
                              and row["sessions_streaming"] == n)
    return row
