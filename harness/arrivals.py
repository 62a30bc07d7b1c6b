"""Open-loop arrivals: callers arrive as a seeded Poisson process, like calls into a contact centre.

``load.shape: {type: arrivals, rate: 20/min, max_concurrent: 50, callers: 200, seed: 1}``. Every
other shape is closed-loop (a fixed pool of users calling back to back), which slows its own
arrival rate down as the agent slows down; an arrival process does not, so queueing shows up as it
would in production. Each arrival runs one session. ``max_concurrent`` caps the sessions alive at
once (callers beyond it wait for a free line, as in a call queue, and are counted as waiting);
``callers`` caps the number of arrivals; arrivals stop at ``load.duration``.

The schedule is a pure function of (rate, duration, callers, seed), so the same scenario always
offers the same load; the engine runner and the Locust master hand out the same list.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$")
_UNIT_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(value: Any) -> float:
    """Arrivals per second from ``20/min``, ``0.5/s``, ``600/h`` or a bare number (per minute)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a rate like 20/min, 1/s or 600/h, got {value!r}")
    if isinstance(value, (int, float)):
        per_s = float(value) / 60.0
    else:
        m = _RATE.match(str(value).lower())
        if not m:
            raise ValueError(f"expected a rate like 20/min, 1/s or 600/h, got {value!r}")
        per_s = float(m.group(1)) / _UNIT_S[m.group(2) or "min"]
    if not 0 < per_s <= 1000:
        raise ValueError(f"rate must be between 0 and 1000/s, got {value!r}")
    return per_s


@dataclass(frozen=True)
class ArrivalSpec:
    rate_per_s: float
    duration_s: float
    max_concurrent: int
    callers: int | None = None
    seed: int = 0

    @classmethod
    def from_plan(cls, plan: Any) -> "ArrivalSpec":
        p = plan.params
        return cls(rate_per_s=parse_rate(p.get("rate", "1/s")), duration_s=plan.duration_s,
                   max_concurrent=plan.peak or int(p.get("max_concurrent", plan.users)),  # --users caps it
                   callers=int(p["callers"]) if p.get("callers") is not None else None, seed=int(p.get("seed", 0)))

    def times(self) -> list[float]:
        """Arrival instants (seconds from the start), exponential gaps from a seeded generator."""
        rng = random.Random(self.seed)
        out: list[float] = []
        t = 0.0
        limit = self.callers if self.callers is not None else 10_000_000
        while len(out) < limit:
            t += rng.expovariate(self.rate_per_s)
            if t >= self.duration_s:
                break
            out.append(t)
        return out

    @property
    def expected_callers(self) -> float:
        n = self.rate_per_s * self.duration_s
        return min(n, self.callers) if self.callers is not None else n


@dataclass
class ArrivalSchedule:
    """Hands out arrivals in order: ``next()`` -> (index, at_s) or None once the schedule is spent."""

    times: list[float]
    _next: int = 0

    def next(self) -> tuple[int, float] | None:
        if self._next >= len(self.times):
            return None
        i = self._next
        self._next += 1
        return i, self.times[i]

    @property
    def remaining(self) -> int:
        return len(self.times) - self._next
