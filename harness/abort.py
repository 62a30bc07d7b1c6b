"""``load.abort_on``: stop a run that cannot produce data (like k6's ``abortOnFail``), saying why at once.

A run whose every session is refused (401/403/404: wrong key, missing role, wrong path) only hammers
the target and then reports nothing; the watch trips on the first N sessions and hands back the
diagnosis so the console shows it immediately and the verdict is INCOMPLETE (exit 3).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from . import diagnosis

#: Handshake statuses that mean "this caller will never get in", not "the service is busy".
REFUSED_STATUSES = (401, 403, 404)


class AbortWatch:
    """Fed every session record in the order they end; ``observe`` returns the abort reason once."""

    def __init__(self, abort_on: Any):
        self.refused_sessions = int(getattr(abort_on, "refused_sessions", 0) or 0)
        self.seen = 0
        self.statuses: Counter[int] = Counter()
        self.reason: str | None = None

    def observe(self, rec: Any) -> str | None:
        outcome = getattr(rec, "outcome", None) if not isinstance(rec, dict) else rec.get("outcome")
        status = getattr(rec, "http_status", None) if not isinstance(rec, dict) else rec.get("http_status")
        n = self.refused_sessions
        if self.reason is not None or not n or self.seen >= n or outcome == "aborted":
            return None
        self.seen += 1
        if outcome == "rejected" and status in REFUSED_STATUSES:
            self.statuses[int(status)] += 1
        if self.seen == n and sum(self.statuses.values()) == n:
            top, _ = self.statuses.most_common(1)[0]
            codes = ", ".join(f"HTTP {s} ×{c}" for s, c in self.statuses.most_common())
            self.reason = (f"load.abort_on.refused_sessions: the first {n} sessions were all refused ({codes}); "
                           f"{diagnosis.diagnose(top)}")
            return self.reason
        return None
