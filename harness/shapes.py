"""Load shapes as plain functions of time, shared by Locust's LoadTestShape and the engine runner.

``--users`` (CLI and Locust, including the web UI form) is never ignored: for ``flat`` it is the user
count, for a shaped scenario it sets the shape's *peak* and every user count of the shape is rescaled
by the same factor (``soak`` to 7 users with ``--users 3`` ramps to 3; a step of 2→9 with ``--users 18``
steps 4→18), so the shape keeps its form.

Every shape ends with a *drain*: zero users for longer than stop-timeout plus one worker report
interval, so that in distributed runs the workers' last records reach the master before it quits
(Locust's master otherwise sleeps 0.5 s and drops them; see shared/notes §3.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .schema import parse_duration

WORKER_REPORT_INTERVAL_S = 3.0  # locust.runners.WORKER_REPORT_INTERVAL

INT_MAX = 20000  # bound of every integer shape parameter (users, callers...)
_PARAMS: dict[str, dict[str, str]] = {
    "flat": {},
    "step": {"start_users": "int", "step_users": "int", "step_every": "duration", "max_users": "int"},
    "spike": {"base_users": "int", "spike_users": "int", "spike_at": "duration", "spike_for": "duration"},
    "soak": {"users": "int", "ramp": "duration"},
    "breakpoint": {"start_users": "int", "step_users": "int", "step_every": "duration", "max_users": "int",
                   "hold": "list"},
    "arrivals": {"rate": "rate", "max_concurrent": "int", "callers": "int", "seed": "int"},  # harness/arrivals.py
}


def validate_shape(shape: Any, path: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    allowed = _PARAMS.get(shape.type, {})
    for key, value in shape.params.items():
        kind = allowed.get(key)
        if kind is None:
            problems.append((f"{path}.{key}", f"unknown parameter for shape {shape.type!r} "
                                              f"(allowed: {', '.join(allowed) or 'none'})"))
        elif kind == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > INT_MAX):
            problems.append((f"{path}.{key}", f"expected an integer between 0 and {INT_MAX}, got {value!r}"))
        elif kind == "duration":
            try:
                if parse_duration(value) <= 0:
                    raise ValueError("must be > 0")
            except ValueError as exc:
                problems.append((f"{path}.{key}", str(exc)))
        elif kind == "rate":
            from .arrivals import parse_rate

            try:
                parse_rate(value)
            except ValueError as exc:
                problems.append((f"{path}.{key}", str(exc)))
        elif kind == "list":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append((f"{path}.{key}", "expected a list of threshold strings"))
            else:
                from .report.check import parse_threshold

                for i, v in enumerate(value):
                    try:
                        parse_threshold(v)
                    except ValueError as exc:
                        problems.append((f"{path}.{key}[{i}]", str(exc)))
    if shape.type == "arrivals" and "rate" not in shape.params:
        problems.append((f"{path}.rate", "an arrivals shape needs a rate, e.g. 20/min"))
    if shape.type == "breakpoint" and not shape.params.get("hold"):
        problems.append((f"{path}.hold", "a breakpoint sweep needs conditions to hold, e.g. "
                                         "['first_audio_ms.p95 <= 1500', 'completeness >= 0.95']"))
    return problems


@dataclass
class ShapePlan:
    """``tick(elapsed, window) -> (users, spawn_rate) | None``; None means the run is over."""

    kind: str
    users: int
    spawn_rate: float
    duration_s: float
    drain_s: float
    params: dict[str, Any] = field(default_factory=dict)
    peak: int | None = None  # --users for a shaped scenario: the shape is rescaled to peak here
    breakpoint: dict[str, Any] | None = None  # filled by a breakpoint sweep when a condition broke
    _stop_at: float | None = None
    _step_start: float = 0.0
    _step_users: int = 0

    @property
    def total_s(self) -> float:
        return (self._stop_at if self._stop_at is not None else self.duration_s) + self.drain_s

    def tick(self, elapsed: float, evaluate: Callable[[float], list[Any]] | None = None) -> tuple[int, float] | None:
        end = self._stop_at if self._stop_at is not None else self.duration_s
        if elapsed >= end + self.drain_s:
            return None
        if elapsed >= end:
            return 0, max(self.spawn_rate, 1.0)
        users = self._users_at(elapsed, evaluate)
        if self._stop_at is not None:  # a breakpoint was found during this tick
            return 0, max(self.spawn_rate, 1.0)
        if self.kind == "arrivals":  # the lines are all open at once; arrivals pace the load
            return users, max(self.spawn_rate, float(users))
        return users, self.spawn_rate

    def _scaled(self, users: int) -> int:
        """The shape's user count at some instant, rescaled so the shape peaks at ``peak`` (--users)."""
        natural = _natural_peak(self)
        if self.peak is None or self.kind == "flat" or natural <= 0 or users <= 0:
            return users
        return min(self.peak, max(1, round(users * self.peak / natural)))

    def _users_at(self, t: float, evaluate: Callable[[float], list[Any]] | None) -> int:
        p = self.params
        if self.kind in ("flat",):
            return self.users
        if self.kind == "arrivals":  # the concurrency cap: arrivals themselves come from harness/arrivals.py
            return self._scaled(int(p.get("max_concurrent", self.users)))
        if self.kind == "soak":
            ramp = parse_duration(p.get("ramp", 60))
            target = int(p.get("users", self.users))
            return self._scaled(target if t >= ramp else max(1, int(target * t / ramp) + 1))
        if self.kind == "spike":
            base, spike = int(p.get("base_users", 1)), int(p.get("spike_users", self.users))
            at, dur = parse_duration(p.get("spike_at", self.duration_s / 3)), parse_duration(p.get("spike_for", 30))
            return self._scaled(spike if at <= t < at + dur else base)
        # step and breakpoint: start, +step every interval, capped
        start, step = int(p.get("start_users", 1)), int(p.get("step_users", 1))
        every, cap = parse_duration(p.get("step_every", 30)), int(p.get("max_users", self.users))
        n = int(t // every)
        users = self._scaled(min(cap, start + n * step))
        if self.kind == "breakpoint" and evaluate is not None and n > 0 and users != self._step_users:
            # A step just ended: judge it on the turns that finished during it.
            failed = [r for r in evaluate(n * every - every) if not r.passed]
            if failed:
                self.breakpoint = {"users": self._step_users, "at_s": round(t, 1),
                                   "breached": [f"{r.threshold} (actual {r.actual})" for r in failed]}
                self._stop_at = t
            self._step_users = users
        elif self._step_users == 0:
            self._step_users = users
        return users


class StepWindow:
    """The turn records of the breakpoint step being judged, for its ``hold`` thresholds.

    Whole records, so any threshold ``voiceload check`` accepts works here too; turns from earlier
    steps are dropped as the sweep advances, and nothing is kept at all for other shapes (a soak
    must not grow memory). Call it with a step's start (seconds into the run): that is the
    ``evaluate`` argument of :meth:`ShapePlan.tick`. Records are placed by their own
    ``t_speech_end`` (wall clock), so records that reach a Locust master late still count.
    """

    def __init__(self, plan: ShapePlan, t0_wall: float) -> None:
        self.holds = list(plan.params.get("hold", [])) if plan.kind == "breakpoint" else []
        self.t0_wall = t0_wall
        self._since_wall = t0_wall
        self._rows: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        if self.holds and record.get("t_speech_end", 0) >= self._since_wall:
            self._rows.append(record)

    def __call__(self, since_s: float) -> list[Any]:
        import pandas as pd

        from .report.check import evaluate, parse_threshold

        self._since_wall = self.t0_wall + since_s
        self._rows = [r for r in self._rows if r.get("t_speech_end", 0) >= self._since_wall]
        return evaluate(pd.DataFrame(self._rows), [parse_threshold(h) for h in self.holds])


def make_plan(load: Any, *, users: int | None = None, spawn_rate: float | None = None,
              duration_s: float | None = None, drain_s: float | None = None) -> ShapePlan:
    """Build the plan from a scenario's ``load`` block; explicit arguments (CLI/Locust flags) win.

    ``users`` is the user count of a flat scenario and the peak of a shaped one (module docstring).
    """
    flat = load.shape.type == "flat"
    u = users if users is not None and flat else load.users
    if drain_s is None:
        drain_s = load.stop_timeout_s + WORKER_REPORT_INTERVAL_S + 2.0
    return ShapePlan(kind=load.shape.type, users=u, spawn_rate=spawn_rate or load.spawn_rate,
                     duration_s=duration_s if duration_s is not None else load.duration_s,
                     drain_s=drain_s, params=dict(load.shape.params),
                     peak=None if flat or users is None else int(users))


def peak_users(plan: ShapePlan) -> int:
    """The most users the plan ever asks for (after any --users rescale)."""
    natural = _natural_peak(plan)
    return natural if plan.peak is None or plan.kind == "flat" else plan.peak


def _natural_peak(plan: ShapePlan) -> int:
    p = plan.params
    if plan.kind == "spike":
        return max(int(p.get("base_users", 1)), int(p.get("spike_users", plan.users)))
    if plan.kind in ("step", "breakpoint"):
        return int(p.get("max_users", plan.users))
    if plan.kind == "soak":
        return int(p.get("users", plan.users))
    if plan.kind == "arrivals":
        return int(p.get("max_concurrent", plan.users))
    return plan.users
