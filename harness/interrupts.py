"""SIGINT/SIGTERM while ``voiceload run`` starts: never lost, never a hang, always exit 3.

Until the runner installs its own (gevent) handlers, a Python handler raises :class:`Interrupted` so
a blocking start-up step (the simulator's "listening" line, a speech request) ends at once. Python
drops an exception raised where it cannot propagate - an at-fork hook (the simulator's fork), a
``__del__``, a weakref callback print "Exception ignored in" - and a run whose signal was dropped so
ran its full duration. So the signal is also *recorded*: ``check()`` at each start-up step raises it
again, the runner stops at once when it finds one after installing its own handlers, and ``held()``
keeps the raise out of steps that must not stop half-way (spawning the simulator: its handle must be
stored before anything can end start-up; creating the run directory); the caller ``check()``\s after.
Only the first signal raises: a second one must not break the cleanup and report the first one started.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A signal during start-up, handled like Ctrl-C but named (run.json ``interrupted.signal``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.signal = name


class RunSignals:
    """The process's SIGINT/SIGTERM from ``voiceload run``'s first line until the runner takes over."""

    def __init__(self) -> None:
        self.received: dict[str, str] | None = None  # {"signal": "SIGTERM", "at": ISO time}: the first one
        self.raising = True  # start-up: the first signal raises; after hand_over() signals are only recorded
        self._held = 0

    def install(self) -> "RunSignals":
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.received is not None:
            return
        self.received = {"signal": signal.Signals(signum).name,
                         "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        if self.raising and not self._held:
            raise Interrupted(self.received["signal"])

    def check(self) -> None:
        """Raise the recorded signal (start-up only): its first raise may have been dropped."""
        if self.received is not None and self.raising:
            raise Interrupted(self.received["signal"])

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """No raise inside the block; a signal there is only recorded: ``check()`` after it raises it."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1

    def hand_over(self) -> None:
        """Start-up is over (the runner installs its own handlers, or the run is ending): record only."""
        self.raising = False


_installed: RunSignals | None = None


def install() -> RunSignals:
    """The process's RunSignals for a run starting now: the one cli.main installed first (keeping a signal
    it already recorded), else new ones (a run after a run in one process starts raising again)."""
    global _installed
    if _installed is None or not _installed.raising:
        _installed = RunSignals().install()
    return _installed


def held() -> Any:
    """``RunSignals.held`` of the installed handlers; nothing to hold in other processes (Locust)."""
    return _installed.held() if _installed is not None else contextlib.nullcontext()


def check() -> None:
    if _installed is not None:
        _installed.check()
