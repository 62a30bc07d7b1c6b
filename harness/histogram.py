"""Fixed 0.1 ms bins up to 100 ms: percentiles of per-frame or per-read delays in 4 KB, whatever the
run length, mergeable across sessions by adding counts (pacing lateness, receive-stamp delay)."""

from __future__ import annotations

from array import array


class MsHistogram:
    """Hot loops may update ``counts``/``n``/``max_ms`` inline (no method call per frame), so clear
    it with :meth:`reset` rather than replacing the object."""

    BIN_MS = 0.1
    BINS = 1000  # + one overflow bin (>= 100 ms)
    __slots__ = ("counts", "n", "max_ms")

    def __init__(self) -> None:
        self.counts = array("I", bytes(4 * (self.BINS + 1)))
        self.n = 0
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        i = int(ms * 10.0)  # = ms / BIN_MS, as the mic's inline copy computes it
        self.counts[i if 0 <= i < self.BINS else (0 if i < 0 else self.BINS)] += 1
        self.n += 1
        if ms > self.max_ms:
            self.max_ms = ms

    def copy(self) -> "MsHistogram":
        """A snapshot at C speed (benchmarks copy a thousand of these inside a timed window)."""
        h = MsHistogram.__new__(MsHistogram)
        h.counts, h.n, h.max_ms = array("I", self.counts), self.n, self.max_ms
        return h

    def merge(self, other: "MsHistogram") -> None:
        counts = self.counts
        for i, c in enumerate(other.counts):
            if c:
                counts[i] += c
        self.n += other.n
        self.max_ms = max(self.max_ms, other.max_ms)

    def reset(self) -> None:
        """Start a new measurement window (benchmarks)."""
        self.counts[:] = array("I", bytes(4 * (self.BINS + 1)))
        self.n = 0
        self.max_ms = 0.0

    def percentile(self, q: float) -> float | None:
        """Upper edge of the bin holding the q-th percentile (never above the exact maximum)."""
        if not self.n:
            return None
        rank, seen = q / 100.0 * self.n, 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank and c:
                return min((i + 1) * self.BIN_MS, self.max_ms)
        return self.max_ms

    def summary(self, prefix: str) -> dict[str, float | None]:
        """``<prefix>_p50_ms``, ``_p99_ms`` and ``_max_ms``, rounded to µs (None when empty)."""
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 3)

        return {f"{prefix}_p50_ms": r(self.percentile(50)), f"{prefix}_p99_ms": r(self.percentile(99)),
                f"{prefix}_max_ms": r(self.max_ms) if self.n else None}
