"""When a connection's session ends at the service's maximum length, and whether the next turn fits.

Voice Live ends a session at its maximum length (S0: 60 min, reference §6a) with an ``error``
``session_expired`` and close 1001: the turn in flight at that instant is lost. A caller that knows the
expiry reconnects *between turns* instead, when the next turn would not fit. It knows it from
``session.created`` ``expires_at`` (unix seconds, from api-version 2026-07-15; the SDK's
``ResponseSession.expires_at``), else from the target's ``limits.max_session_minutes`` counted from the
connection's ``session.created``. Everything here is arithmetic on monotonic nanoseconds.
"""

from __future__ import annotations

import time
from typing import Any

PLANNED = "planned"  # reconnected between turns before a known expiry: no turn lost
EXPIRED = "expired"  # the server ended the session (session_expired / close 1001) first: reactive


def expiry_ns(created: dict[str, Any], created_mono_ns: int, max_session_minutes: float | None,
              now_wall_s: float | None = None) -> int | None:
    """Monotonic time at which this connection's session expires, or None when nothing says.

    ``expires_at`` is whole seconds on the server's clock: it is trusted over the configured maximum
    (the server sets it). A value that is not a positive number is ignored."""
    at = created.get("expires_at")
    if isinstance(at, (int, float)) and not isinstance(at, bool) and at > 0:
        wall = time.time() if now_wall_s is None else now_wall_s
        return created_mono_ns + int((float(at) - wall) * 1e9)
    if max_session_minutes is not None and max_session_minutes > 0:
        return created_mono_ns + int(max_session_minutes * 60e9)
    return None


def fits(expiry_at_ns: int | None, now_ns: int, turn_s: float, margin_s: float) -> bool:
    """Would a turn of ``turn_s`` seconds started now end ``margin_s`` before the expiry?"""
    return expiry_at_ns is None or now_ns + int((turn_s + margin_s) * 1e9) <= expiry_at_ns
