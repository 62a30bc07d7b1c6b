"""Quota-aware connecting: which limits a target has, and a connection budget that never exceeds them.

Voice Live counts new connections per resource in a rolling minute (30 on S0) and answers 429
beyond. A load generator that simply retries turns that into a storm of refusals; one that knows
the budget waits instead, and its callers are shown as *waiting*, not failing.

:class:`ConnectionBudget` is exact without knowing where the server stamps a connection: a slot
counts from the moment it is taken until ``window_s`` after its handshake *finished* (the latest
instant the server can have counted it), and a new slot is only granted once fewer than the quota
are inside that span. So any two connections N apart are at least ``window_s`` apart on the
server's clock, whatever the handshake latency. The same class serves ``voiceload run`` (one
process) and the Locust master, which hands slots to workers (locustfile.py).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable
from urllib.parse import urlparse

import gevent
import gevent.event

from .limits import AZURE_S0, UNLIMITED, Limits

#: Hosts of Azure resources that get the S0 quotas unless the scenario says otherwise.
AZURE_HOST_SUFFIXES = (".services.ai.azure.com", ".cognitiveservices.azure.com", ".api.cognitive.microsoft.com")
LIMIT_KEYS = ("connections_per_minute", "tokens_per_minute", "max_session_minutes", "window_s")
#: A slot whose handshake never reports back (a worker that died mid-connect) stops counting as in
#: flight after this long and is treated as having finished then.
MAX_IN_FLIGHT_S = 120.0


def is_azure_host(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return any(host.endswith(s) for s in AZURE_HOST_SUFFIXES)


def default_limits(url: str | None) -> Limits:
    """S0 for Azure hosts, nothing for anything else (a proxy, a self-hosted gateway, a test server)."""
    return AZURE_S0 if url and is_azure_host(url) else UNLIMITED


def resource_key(url: str) -> str:
    """Quotas belong to a resource: its host (two targets on one resource share one budget)."""
    p = urlparse(url)
    return f"{(p.hostname or '').lower()}:{p.port or ''}"


def merge_limits(base: Limits, explicit: dict[str, Any] | None) -> Limits:
    """``explicit`` (the scenario's ``target.limits``, already validated) over ``base``; a key set to
    null means "no limit" for that key."""
    if not explicit:
        return base
    return replace(base, **{k: v for k, v in explicit.items() if k in LIMIT_KEYS})


def parse_limits(raw: Any, path: str, problems: Any) -> dict[str, Any] | None:
    """Validate ``target.limits``; returns only the keys given (merged over the host's defaults later)."""
    from . import schema as s

    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.add(path, "expected a mapping with connections_per_minute, tokens_per_minute, "
                           "max_session_minutes (window_s: tests only)")
        return None
    s.check_keys(raw, LIMIT_KEYS, path, problems)
    out: dict[str, Any] = {}
    bounds = {"connections_per_minute": (1, 100_000), "tokens_per_minute": (1, 1e9),
              "max_session_minutes": (0.01, 24 * 60), "window_s": (0.1, 3600)}
    for key, (lo, hi) in bounds.items():
        if key not in raw:
            continue
        if raw[key] is None and key != "window_s":
            out[key] = None  # explicitly unlimited
            continue
        value = s.get_float(raw, key, path, problems, None, lo=lo, hi=hi)
        if value is not None:
            out[key] = value
    return out


# -- the budget -------------------------------------------------------------------------------------------
@dataclass
class Slot:
    """One connection attempt's share of the budget; call :meth:`done` once its handshake ended."""

    budget: "ConnectionBudget"
    t_grant: float
    t_done: float | None = None
    waited_s: float = 0.0

    def done(self, ago_s: float = 0.0) -> None:
        """The handshake ended (``ago_s`` seconds ago, never before the grant): the window starts."""
        if self.t_done is None:
            self.t_done = max(self.t_grant, self.budget.clock() - ago_s)
            self.budget.changed.set()

    def until(self, now: float) -> float:
        """When this slot stops counting (inf while its handshake is in flight)."""
        if self.t_done is not None:
            return self.t_done + self.budget.window_s
        if now - self.t_grant < MAX_IN_FLIGHT_S:
            return math.inf
        return self.t_grant + MAX_IN_FLIGHT_S + self.budget.window_s


@dataclass
class ConnectionBudget:
    """At most ``per_window`` connections in any rolling ``window_s`` (see the module docstring)."""

    per_window: int
    window_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    slots: list[Slot] = field(default_factory=list)
    waiting: int = 0  # callers blocked in acquire() right now
    granted: int = 0
    waited_s: float = 0.0  # total time callers spent waiting for budget
    changed: gevent.event.Event = field(default_factory=gevent.event.Event)

    @classmethod
    def for_limits(cls, limits: Limits) -> "ConnectionBudget | None":
        if limits.connections_per_minute is None:
            return None
        return cls(per_window=max(1, int(limits.connections_per_minute)), window_s=limits.window_s)

    def next_free(self, now: float) -> float:
        """``now`` if a slot can be taken at once, else when the next one frees (inf: after a handshake)."""
        self.slots = [s for s in self.slots if s.until(now) > now]
        if self.per_window <= 0:  # a Locust worker without a share (yet): wait for one
            return math.inf
        if len(self.slots) < self.per_window:
            return now
        return sorted(s.until(now) for s in self.slots)[len(self.slots) - self.per_window]

    def try_take(self) -> Slot | None:
        now = self.clock()
        if self.next_free(now) > now:
            return None
        slot = Slot(self, now)
        self.slots.append(slot)
        self.granted += 1
        return slot

    def acquire(self, cancelled: Callable[[], bool] = lambda: False, max_wait_s: float = 3600.0) -> Slot | None:
        """Block (cooperatively) until a slot is free; None if ``cancelled()`` or after ``max_wait_s``."""
        t0 = self.clock()
        slot = self.try_take()
        if slot is not None:
            return slot
        self.waiting += 1
        try:
            while not cancelled() and self.clock() - t0 < max_wait_s:
                now = self.clock()
                wake = min(self.next_free(now) - now, 0.5)  # re-check cancellation at least twice a second
                self.changed.clear()
                self.changed.wait(max(0.0, wake))
                slot = self.try_take()
                if slot is not None:
                    slot.waited_s = self.clock() - t0
                    self.waited_s += slot.waited_s
                    return slot
            return None
        finally:
            self.waiting -= 1


class _NoBudget:
    """The slot of a resource without a known connection quota: connect at once."""

    waited_s = 0.0

    def done(self) -> None:
        pass


NO_BUDGET = _NoBudget()


class Budgets:
    """The budgets of one run, per resource; what sessions call before each connection attempt."""

    def __init__(self, endpoints: Any = ()) -> None:
        self.by_resource: dict[str, ConnectionBudget] = {}
        for e in endpoints:
            self.add(e.resource or e.name, e.limits)

    def gate(self, endpoint: Any, cancelled: Callable[[], bool]) -> Any:
        """A slot for one connection attempt to ``endpoint`` (waits for budget); None if cancelled."""
        budget = self.by_resource.get(endpoint.resource or endpoint.name)
        return NO_BUDGET if budget is None else budget.acquire(cancelled)

    def add(self, resource: str, limits: Limits) -> None:
        if resource not in self.by_resource:
            budget = ConnectionBudget.for_limits(limits)
            if budget is not None:
                self.by_resource[resource] = budget

    def get(self, resource: str) -> ConnectionBudget | None:
        return self.by_resource.get(resource)

    @property
    def waiting(self) -> int:
        return sum(b.waiting for b in self.by_resource.values())

    def summary(self) -> dict[str, Any]:
        return {r: {"connections_per_window": b.per_window, "window_s": b.window_s, "granted": b.granted,
                    "waited_s": round(b.waited_s, 3)} for r, b in self.by_resource.items()}



# -- what a 429 (or a throttling error event) means -----------------------------------------------------
#: Throttle classes in records and reports, kept apart from failures of the agent.
THROTTLES = ("throttled_connections", "throttled_tokens", "capacity")
_TOKEN_WORDS = ("token", "tpm")
_CAPACITY_WORDS = ("capacity", "busy", "overload", "scaling", "scale", "try again later", "temporarily")
_RATE_WORDS = ("rate limit", "rate_limit", "ratelimit", "too many", "quota", "throttl", "exceeded", "429")


def classify_throttle(status: int | None, headers: dict[str, str] | None = None, body: bytes | str = b"",
                      message: str = "") -> str:
    """``throttled_connections``, ``throttled_tokens``, ``capacity`` or "" (not a throttle).

    From the handshake status, headers and body, or from an ``error`` event's code and message.
    Azure answers 429 both for a quota (connections or tokens per minute) and while it scales "even
    within quota" (Learn, quotas page); the words of the body tell them apart (docs/simulator.md
    lists the shapes we know), and a handshake 429 that names neither is a connection-rate 429.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    headers = {k.lower(): str(v) for k, v in (headers or {}).items()}
    text = " ".join((text, message, " ".join(f"{k} {v}" for k, v in headers.items()
                                               if k.startswith(("x-ratelimit", "x-ms-", "apim")))))
    low = text.lower()
    if "x-ratelimit-remaining-tokens 0" in low or any(w in low for w in _TOKEN_WORDS) and (
            status == 429 or any(w in low for w in _RATE_WORDS)):
        return "throttled_tokens"
    if any(w in low for w in _CAPACITY_WORDS) and (status in (429, 503) or any(w in low for w in _RATE_WORDS)):
        return "capacity"
    if status == 429:
        return "throttled_connections"
    if any(w in low for w in ("rate limit", "rate_limit", "too many", "throttl")):
        return "throttled_connections" if "connection" in low else "capacity"
    return ""


def is_session_expiry(message: str) -> bool:
    """The server ended the session because it reached the maximum session length."""
    low = message.lower()
    return "session_expired" in low or ("session" in low and ("expired" in low or "maximum duration" in low
                                                              or "time limit" in low))


_RETRY_AFTER_TEXT = re.compile(r"retry after (\d+(?:\.\d+)?) ?(?:s\b|sec|second)", re.I)


def retry_after_from_text(message: str) -> float | None:
    """"Please retry after 12 seconds" in an error message (Azure's wording) -> 12.0."""
    m = _RETRY_AFTER_TEXT.search(message or "")
    return float(m.group(1)) if m else None


def reconnect_summary(sessions: Any) -> dict[str, Any] | None:
    """For run.json: how often sessions reconnected because of the maximum session length, why
    (``planned``: between turns before a known expiry; ``expired``: after the server ended the session,
    client/expiry.py), and how long the caller was without a connection each time."""
    gaps: list[float] = []
    count = 0
    reasons = {"planned": 0, "expired": 0}
    for s in sessions:
        n = int(s.get("reconnects") or 0)
        count += n
        gaps += [float(g) for g in s.get("reconnect_gap_ms") or []]
        why = list(s.get("reconnect_reasons") or [])
        for r in why + ["expired"] * (n - len(why)):  # records from before reasons existed were all reactive
            reasons[r] = reasons.get(r, 0) + 1
    if not count:
        return None
    gaps.sort()
    return {"count": count, **reasons, "sessions": sum(1 for s in sessions if s.get("reconnects")),
            "gap_ms_p50": round(gaps[len(gaps) // 2], 1), "gap_ms_max": round(gaps[-1], 1)}


def note_reconnects(out: Any) -> None:
    """run.json ``reconnects`` of a run directory (rundir.RunOutput), from its sessions.jsonl."""
    from .records import read_records

    path = out.dir / "sessions.jsonl"
    summary = reconnect_summary(list(read_records(path))) if path.exists() else None
    if summary:
        out.meta["reconnects"] = summary
        line = (f"reconnects for the maximum session length: {summary['count']} ({summary['planned']} planned "
                f"between turns, {summary['expired']} after the server expired a session), gap p50 "
                f"{summary['gap_ms_p50']:g} ms, max {summary['gap_ms_max']:g} ms")
        out.note(line)  # report.html's notes
        print(line, flush=True)
