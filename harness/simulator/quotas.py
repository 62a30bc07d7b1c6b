"""Per-resource quota enforcement: one simulator process is one Azure resource.

Voice Live limits a resource's new connections per minute, tokens per minute and session length
(harness/limits.py, Learn's quota page). This module keeps the rolling-window counters and decides;
it also builds the answers (HTTP 429 bodies and headers, ``error`` events) so that the three kinds
of 429 a harness must tell apart - connection quota, token quota, service capacity - are shaped in
one place. docs/simulator.md ("Quotas") says exactly how they differ and what is unconfirmed.
Times are ``time.monotonic_ns()``; single event loop, so no locking.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from ..limits import Limits
from ..protocol import events as ev
from ..protocol.session import DEFAULT_SESSION_S
from .actions import Action, Record, Send
from .truth import TurnTruth

NS = 1_000_000_000
BUCKETS_PER_WINDOW = 60  # token counter resolution: one bucket per "second" of a 60 s window

#: The headers and body fields that tell the kinds apart (docs/simulator.md).
KIND_HEADER = "x-ms-throttle-kind"  # simulator-only hint; real services do not send it
THROTTLED_CONNECTIONS = "throttled_connections"
THROTTLED_TOKENS = "throttled_tokens"
CAPACITY = "capacity"
SESSION_EXPIRED = "session_expired"
TOKENS_ERROR_CODE = "rate_limit_exceeded"
TOKENS_CLOSE_CODE = 1013  # RFC 6455 "Try Again Later"


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up, at least 1 (HTTP ``Retry-After`` is an integer)."""
    return str(max(1, math.ceil(seconds - 1e-9)))


class ResourceQuota:
    """Rolling-window counters of one resource: admitted connections (exact) and tokens (bucketed)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.window_ns = int(limits.window_s * NS)
        self._connections: deque[int] = deque()
        self._bucket_ns = max(1, self.window_ns // BUCKETS_PER_WINDOW)
        self._tokens: deque[list[float]] = deque()  # [bucket start ns, tokens] (fractions: 20 ms of audio = 0.2)
        self._token_sum = 0.0
        self.tokens_total = 0.0
        self.throttled: dict[str, int] = {}

    # --- connections -------------------------------------------------------------------------------
    def connection_retry_after(self, now_ns: int) -> float | None:
        """None if a new connection fits the window now, else seconds until the oldest one leaves it."""
        if self.limits.connections_per_minute is None:
            return None
        cap = max(1, int(self.limits.connections_per_minute))
        q, horizon = self._connections, now_ns - self.window_ns
        while q and q[0] <= horizon:
            q.popleft()
        if len(q) < cap:
            return None
        # The (len - cap + 1)-th oldest must leave before one more fits.
        oldest = q[len(q) - cap]
        return max(0.001, (oldest + self.window_ns - now_ns) / NS)

    def admit_connection(self, now_ns: int) -> None:
        """Count an accepted connection (only accepted ones use the quota: a refused retry does not)."""
        if self.limits.connections_per_minute is not None:
            self._connections.append(now_ns)

    def connections_in_window(self, now_ns: int) -> int:
        self.connection_retry_after(now_ns)  # purges
        return len(self._connections)

    # --- tokens ------------------------------------------------------------------------------------
    def spend(self, tokens: float, now_ns: int) -> None:
        if tokens <= 0:
            return
        self.tokens_total += tokens
        if self.limits.tokens_per_minute is None:
            return
        start = now_ns - now_ns % self._bucket_ns
        if self._tokens and self._tokens[-1][0] == start:
            self._tokens[-1][1] += tokens
        else:
            self._tokens.append([start, tokens])
        self._token_sum += tokens

    def tokens_used(self, now_ns: int) -> int:
        horizon = now_ns - self.window_ns
        q = self._tokens
        while q and q[0][0] + self._bucket_ns <= horizon:
            self._token_sum -= q.popleft()[1]
        if not q:
            self._token_sum = 0.0  # no float drift left behind
        return int(self._token_sum + 1e-6)

    def tokens_retry_after(self, now_ns: int) -> float | None:
        """None while under the token limit, else seconds until enough old tokens leave the window."""
        cap = self.limits.tokens_per_minute
        if cap is None:
            return None
        used = self.tokens_used(now_ns)
        if used < cap:
            return None
        for start, n in self._tokens:
            used -= n
            if used < cap:
                return max(0.001, (start + self._bucket_ns + self.window_ns - now_ns) / NS)
        return self.limits.window_s  # unreachable: the loop empties the window

    def rate_limits(self, now_ns: int) -> list[dict[str, Any]]:
        """The ``rate_limits.updated`` payload for what is limited (OpenAI's names: requests, tokens)."""
        out = []
        cpm, tpm = self.limits.connections_per_minute, self.limits.tokens_per_minute
        if cpm is not None:
            n = self.connections_in_window(now_ns)
            reset = (self._connections[0] + self.window_ns - now_ns) / NS if self._connections else 0.0
            out.append({"name": "requests", "limit": int(cpm), "remaining": max(0, int(cpm) - n),
                        "reset_seconds": round(max(0.0, reset), 3)})
        if tpm is not None:
            used = self.tokens_used(now_ns)
            reset = (self._tokens[0][0] + self._bucket_ns + self.window_ns - now_ns) / NS if self._tokens else 0.0
            out.append({"name": "tokens", "limit": int(tpm), "remaining": max(0, int(tpm) - used),
                        "reset_seconds": round(max(0.0, reset), 3)})
        return out

    def note(self, kind: str) -> None:
        self.throttled[kind] = self.throttled.get(kind, 0) + 1


# --- the answers -------------------------------------------------------------------------------------
def _per(limits: Limits) -> str:
    return "minute" if limits.window_s == 60.0 else f"{limits.window_s:g} seconds"


def connections_429(limits: Limits, retry_after_s: float) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Body and headers of a handshake refused by the connection quota (Azure OpenAI's 429 wording)."""
    wait = retry_after_header(retry_after_s)
    body = {"error": {"code": "429", "message": (
        f"Requests to the Voice Live API have exceeded the new-connection rate limit of your current "
        f"AIServices S0 pricing tier ({limits.connections_per_minute:g} new connections per {_per(limits)}). "
        f"Please retry after {wait} seconds.")}}
    headers = [("Retry-After", wait), ("retry-after-ms", str(max(1, math.ceil(retry_after_s * 1000)))),
               ("x-ratelimit-limit-requests", f"{limits.connections_per_minute:g}"),
               ("x-ratelimit-remaining-requests", "0"), (KIND_HEADER, THROTTLED_CONNECTIONS)]
    return body, headers


def capacity_429(retry_after_s: float) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The service is scaling (within quota): no rate-limit headers, a different code and message.

    ``Retry-After`` is the profile's ``faults.retry_after_s`` as given (fractions allowed, for tests).
    """
    wait = f"{retry_after_s:g}"
    body = {"error": {"code": "ServiceBusy", "message": (
        "The service is currently experiencing high demand and cannot accept new sessions while it scales. "
        f"Please retry after {wait} seconds.")}}
    return body, [("Retry-After", wait), (KIND_HEADER, CAPACITY)]


def tokens_error(limits: Limits, used: int, retry_after_s: float, event_id: str | None = None) -> dict[str, Any]:
    """The ``error`` event of a response refused by the token quota (OpenAI realtime's code/type)."""
    wait = retry_after_header(retry_after_s)
    return ev.error_event(
        f"Requests to the Voice Live API have exceeded the token rate limit of your current AIServices S0 pricing "
        f"tier: limit {limits.tokens_per_minute:g} tokens per {_per(limits)}, used {used}. "
        f"Please retry after {wait} seconds.", code=TOKENS_ERROR_CODE, error_type="tokens", event_id=event_id)


def announced_expiry(now_wall_ns: int, limit_s: float | None) -> int:
    """``expires_at`` (whole unix seconds) of a session created at ``now_wall_ns``: the configured limit
    rounded *up* to a whole second, so the announcement never promises less than the limit, and a
    sub-second limit is never announced as already past."""
    return -(-(now_wall_ns + int((limit_s or DEFAULT_SESSION_S) * 1e9)) // NS)


def session_lifetime_ns(expires_at: int | None, now_wall_ns: int, limit_s: float | None) -> int | None:
    """How long after ``session.created`` the simulator ends the session (None: it does not): at the
    announced ``expires_at`` when the session carries one, so what is announced is what is enforced."""
    if not limit_s:
        return None
    if expires_at is None:
        return int(limit_s * 1e9)
    return expires_at * NS - now_wall_ns


def expired_error(limit_s: float) -> dict[str, Any]:
    return ev.error_event(f"Your session hit the maximum duration of {limit_s / 60:g} minutes.",
                          code=SESSION_EXPIRED)


def throttle_record(kind: str, now_mono_ns: int, now_wall_ns: int, **fields: Any) -> dict[str, Any]:
    """One ground-truth line for a throttle decision (``kind: "throttle"`` tells it from response lines)."""
    return {"kind": "throttle", "throttle": kind, "mono_ns": now_mono_ns, "wall_ns": now_wall_ns, **fields}


def failed_response(err: dict[str, Any], rec: dict[str, Any], truth: TurnTruth, **common: Any) -> list[Action]:
    """``on_tokens_exceeded: fail_response``: response.created, the error, response.done failed, no output.

    OpenAI realtime's observed behaviour on rate limits (a failed ``response.done``); the session stays.
    """
    rid = ev.new_id("resp")
    details = {"type": "failed", "error": {k: v for k, v in err["error"].items() if k != "event_id"}}
    truth.response_id, truth.status, truth.reason, truth.fault = rid, "failed", err["error"]["code"], THROTTLED_TOKENS
    rec["response_id"] = rid
    return [Send(ev.server_event(ev.RESPONSE_CREATED, response=ev.response_object(rid, **common)), truth,
                 "response_created"),
            Send(err),
            Send(ev.server_event(ev.RESPONSE_DONE, response=ev.response_object(
                rid, status="failed", status_details=details, **common)), truth, "done_sent"),
            Record(truth), Record(rec)]
