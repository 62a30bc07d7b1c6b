"""What the sans-I/O session asks the I/O layer to do: send, send junk, wake me later, close.

The session never touches a socket or a clock of its own: it returns these, the server executes
them in order on one writer per connection, and tests execute them with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

from .truth import TurnTruth

NS_PER_MS = 1_000_000  # Timer instants are monotonic nanoseconds


@dataclass(slots=True)
class Send:
    """Serialise and send ``event``; if ``truth`` is set, stamp ``instant`` right before writing."""

    event: dict[str, Any]
    truth: TurnTruth | None = None
    instant: str | None = None


@dataclass(slots=True)
class SendRaw:
    """A frame that is not a valid event (fault injection): text if ``str``, binary if ``bytes``."""

    data: str | bytes


@dataclass(slots=True)
class Timer:
    """Call ``fn(now_mono_ns)`` at ``at_ns`` (time.monotonic_ns clock) and execute what it returns."""

    at_ns: int
    fn: Callable[[int], list["Action"]]


@dataclass(slots=True)
class Close:
    """End the connection: a close frame with ``code``, or a TCP abort (no close frame) if ``abort``."""

    code: int = 1000
    reason: str = ""
    abort: bool = False


@dataclass(slots=True)
class Compute:
    """Run ``work()`` off the event loop (a worker thread), then execute ``then(result, now_mono_ns)``.

    For CPU-heavy steps such as fingerprint matching: numpy releases the GIL in its kernels, so the
    loop keeps serving other sessions instead of stalling for milliseconds.
    """

    work: Callable[[], Any]
    then: Callable[[Any, int], list["Action"]]


@dataclass(slots=True)
class Record:
    """Write a finished response (or a throttle decision, a plain dict) to the truth log, in order."""

    truth: TurnTruth | dict


Action = Union[Send, SendRaw, Timer, Close, Record, Compute]
