"""What a caller session is given: where to connect (Endpoint) and how to run (SessionOptions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import gevent

from ..limits import UNLIMITED, Limits
from ..records import TurnRecord


@dataclass
class Endpoint:
    """A connectable target. ``url``/``headers`` are called at every connect so tokens stay fresh."""

    name: str
    url: Callable[[], str]
    headers: Callable[[], dict[str, str]]
    display: str  # redacted, safe for logs and records
    open_timeout_s: float = 30.0
    resource: str = ""  # quotas belong to a resource (quota.resource_key); "" = this endpoint alone
    limits: Limits = UNLIMITED  # the resource's quotas (target.limits over the host's defaults)
    ssl_context: Any = None  # wss:// trust (tlsconf.client_context); None: the system store



@dataclass
class SessionOptions:
    run_id: str = ""
    worker: str = ""
    session_id: str = ""
    seed: int = 0
    kernel_stamps: bool = True  # kernel arrival stamps on plain ws:// (harness/kstamp.py)
    on_record: Callable[[TurnRecord], None] = lambda r: None
    active_sessions: Callable[[], int] = lambda: 0
    stopping: Callable[[], bool] = lambda: False
    sleep: Callable[[float], None] = gevent.sleep
    extra_common: dict[str, Any] = field(default_factory=dict)
    recording_dir: str | None = None  # where sampled sessions write <session_id>.wav
    #: Called before every connection attempt with the endpoint: returns a slot of the resource's
    #: connection budget (``.done()`` once the handshake ended, ``.waited_s``), or None when the run
    #: stopped while waiting. None here: connect at once (no quota known).
    connect_gate: Callable[[Endpoint], Any] | None = None

