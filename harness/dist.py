"""Seeded distributions for latencies, shared by the simulator's profiles and the scenario's tool executors.

One sampler serves both so a latency written as lognormal(p50, p95) in a scenario and one written as
lognormal(median, sigma) in a profile draw the same way from the same seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dist:
    """A seeded distribution: fixed value, normal(mean, sd), lognormal(median, sigma) or uniform(lo, hi)."""

    kind: str = "fixed"
    value: float = 0.0
    mean: float = 0.0
    sd: float = 0.0
    median: float = 1.0
    sigma: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    min: float | None = None
    max: float | None = None

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            x = self.value
        elif self.kind == "normal":
            x = rng.gauss(self.mean, self.sd)
        elif self.kind == "lognormal":
            x = self.median * math.exp(rng.gauss(0.0, self.sigma))
        else:
            x = rng.uniform(self.lo, self.hi)
        if self.min is not None:
            x = max(self.min, x)
        if self.max is not None:
            x = min(self.max, x)
        return x

    @property
    def typical(self) -> float:
        """The centre of the distribution (for docs and summaries)."""
        return {"fixed": self.value, "normal": self.mean, "lognormal": self.median}.get(self.kind, (self.lo + self.hi) / 2)
