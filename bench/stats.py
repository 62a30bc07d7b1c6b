"""Small measurement helpers shared by the bench drivers and the orchestrator (no gevent here).

Lateness and stamp delays are kept as the engine's 0.1 ms histograms (``harness.histogram``), so a
step with 50 000 frames/s never stores per-frame floats; percentiles of raw lists are only used for per-turn values.
"""

from __future__ import annotations

import os
import resource


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 3)


def cpu_s() -> float:
    """User + system CPU of this process (all its threads), seconds."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def sys_s() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def core_busy_s(cpu: int) -> float | None:
    """Task time (user+nice+system) of one core since boot, s: to see who else ran on a bench core.

    irq/softirq are left out on purpose: loopback TCP processing of our own frames lands there.
    """
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(f"cpu{cpu} "):
                    v = [int(x) for x in line.split()[1:]]
                    return (v[0] + v[1] + v[2]) / os.sysconf("SC_CLK_TCK")
    except OSError:
        pass
    return None


def proc_cpu_s(pid: int | None) -> float | None:
    """User + system CPU of another process (the simulator), from /proc."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            parts = fh.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def boost(pid: int | None, nice: int) -> int | None:
    """Raise a bench process's CPU priority (needs root or CAP_SYS_NICE); returns the nice value set.

    On a shared machine this keeps other people's jobs from time-slicing the measured core, which
    otherwise shows up as tens of ms of "lateness" that belongs to the scheduler, not the harness.
    """
    if not pid or nice >= 0:
        return None
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except (PermissionError, OSError):
        return None
    try:  # with sched_autogroup, nice only counts inside the session: raise the session's group too
        with open(f"/proc/{pid}/autogroup", "w", encoding="ascii") as fh:
            fh.write(str(nice))
    except OSError:
        pass
    return nice


def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def kernel_thread_pid(name: str) -> int | None:
    """Pid of a kernel thread such as ``ksoftirqd/0`` (network receive work deferred off the IRQ path)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm", encoding="ascii") as fh:
                    if fh.read().strip() == name:
                        return int(entry)
            except OSError:
                continue
    return None


class Window:
    """CPU, RSS and core-busy snapshots at the start and end of the measurement window."""

    def __init__(self, core: int | None, other_pid: int | None = None, other_core: int | None = None):
        self.core, self.other_pid, self.other_core = core, other_pid, other_core

    def start(self, t: float) -> None:
        # ksoftirqd runs our own loopback TCP receive work when softirqs pile up: not "other jobs".
        self.ksoft = [kernel_thread_pid(f"ksoftirqd/{c}") for c in (self.core, self.other_core)]
        self.ksoft0 = [proc_cpu_s(p) or 0.0 for p in self.ksoft]
        self.t0, self.cpu0, self.sys0, self.rss0 = t, cpu_s(), sys_s(), rss_bytes()
        self.core0 = core_busy_s(self.core) if self.core is not None else None
        self.ocore0 = core_busy_s(self.other_core) if self.other_core is not None else None
        self.other0 = proc_cpu_s(self.other_pid)

    def end(self, t: float) -> dict[str, float | None]:
        wall = max(1e-9, t - self.t0)
        cpu = (cpu_s() - self.cpu0) / wall * 100
        core = core_busy_s(self.core) if self.core is not None else None
        other = proc_cpu_s(self.other_pid)
        core_pct = (core - self.core0) / wall * 100 if core is not None and self.core0 is not None else None
        ocore = core_busy_s(self.other_core) if self.other_core is not None else None
        ocore_pct = (ocore - self.ocore0) / wall * 100 if ocore is not None and self.ocore0 is not None else None
        sim_pct = None if other is None or self.other0 is None else (other - self.other0) / wall * 100
        ksoft = [((proc_cpu_s(p) or 0.0) - k0) / wall * 100 for p, k0 in zip(self.ksoft, self.ksoft0)]
        if core_pct is not None:
            core_pct -= ksoft[0]
        if ocore_pct is not None:
            ocore_pct -= ksoft[1]
        return {
            "ksoftirqd_pct": round(ksoft[0], 1), "sim_ksoftirqd_pct": round(ksoft[1], 1),
            "sim_core_others_pct": None if ocore_pct is None or sim_pct is None
            else round(max(0.0, ocore_pct - sim_pct), 1),
            "window_s": round(wall, 3), "cpu_pct": round(cpu, 2), "rss_end": rss_bytes(),
            "cpu_sys_pct": round((sys_s() - self.sys0) / wall * 100, 2),
            "core_busy_pct": None if core_pct is None else round(core_pct, 1),
            "core_others_pct": None if core_pct is None else round(max(0.0, core_pct - cpu), 1),
            "sim_cpu_pct": None if sim_pct is None else round(sim_pct, 1),
        }


def others_busy_pct(interval: float = 1.0, exclude: tuple[int, ...] = ()) -> float:
    """Busy % of all cores over ``interval`` minus our own excluded processes (other people's jobs)."""
    import time

    def sample() -> tuple[float, float]:
        busy = sum(core_busy_s(c) or 0.0 for c in range(os.cpu_count() or 1))
        own = sum(proc_cpu_s(p) or 0.0 for p in exclude)
        return busy, own

    b0, o0 = sample()
    time.sleep(interval)
    b1, o1 = sample()
    return max(0.0, (b1 - b0) - (o1 - o0)) / interval * 100


def wait_quiet(limit_pct: float = 15.0, max_wait_s: float = 90.0) -> float:
    """Wait (bounded) until other processes use < ``limit_pct`` of a core; returns the last reading."""
    import time

    t_end = time.monotonic() + max_wait_s
    busy = others_busy_pct()
    while busy > limit_pct and time.monotonic() < t_end:
        busy = others_busy_pct(2.0)
    return round(busy, 1)


class GcPauses:
    """Durations of the cyclic GC's collections (gc.callbacks): a full collection stalls every session."""

    def __init__(self) -> None:
        import gc
        import time

        self._t = 0
        self._clock = time.perf_counter_ns
        self.pauses: list[tuple[int, float]] = []  # (generation, ms)
        self.at: list[int] = []  # perf_counter_ns at the start of each
        self.on = False
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = self._clock()
        elif self.on:
            self.pauses.append((info.get("generation", -1), (self._clock() - self._t) / 1e6))
            self.at.append(self._t)

    def summary(self) -> dict:
        ms = [p for _, p in self.pauses]
        return {"gc_collections": len(ms), "gc_gen2": sum(1 for g, _ in self.pauses if g == 2),
                "gc_max_ms": round(max(ms), 3) if ms else 0.0, "gc_total_ms": round(sum(ms), 3)}


def write_result(name: str, result: dict):
    """bench/results/<name>-<date>.json for the small benches (one file per bench and day)."""
    import datetime as dt
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent / "results" / f"{name}-{dt.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
