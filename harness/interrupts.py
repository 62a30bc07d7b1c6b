"""SIGINT/SIGTERM while ``voiceload run`` starts: never lost, never a hang, always exit 3.

The handler never raises where the signal lands. A KeyboardInterrupt raised at an arbitrary bytecode
is dropped inside an at-fork hook, a ``__del__`` or a weakref callback ("Exception ignored in": the
CI run whose SIGTERM landed in the simulator's fork went on for its whole 60 s), and turned into an
ImportError inside an extension module's import (exit 1 with a traceback). Instead the first signal
is recorded, and :class:`Interrupted` is raised

- by ``check()`` at each start-up step (the CPU-bound steps, imports included, simply finish);
- into the main greenlet at its current or next cooperative wait once gevent is in place
  (``interrupt_waits``): the simulator's "listening" line, a speech or token request;
- by the runner, which stops at once when it finds a signal recorded before its own handlers.

``held()`` keeps the raise out of steps that must not stop half-way (the simulator's fork until its
handle is stored, the run directory until run.json is saved); ``check()`` after them raises it. At most
one Interrupted is delivered: a second signal cannot break the cleanup and the report the first started.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
from typing import Any, Callable, Iterator

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
        self.raising = True  # start-up; after hand_over() signals are only recorded
        self._held = 0
        self._delivered = False
        self._wake: Callable[[], None] | None = None  # schedules _deliver in the gevent hub

    def install(self) -> "RunSignals":
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)
        return self

    def interrupt_waits(self) -> None:
        """After gevent's monkey-patching, from the main greenlet: a signal also ends its cooperative wait."""
        import gevent

        hub, main = gevent.get_hub(), gevent.getcurrent()
        self._wake = lambda: hub.loop.run_callback_threadsafe(self._deliver, main)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.received is not None:
            return
        self.received = {"signal": signal.Signals(signum).name,
                         "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        if self._wake is not None:
            self._wake()

    def _deliver(self, main: Any) -> None:  # in the hub, while the main greenlet waits
        if self.raising and not self._held and not self._delivered and not main.dead:
            self._delivered = True
            main.throw(Interrupted(self.received["signal"]))

    def check(self) -> None:
        """Raise the recorded signal (start-up only), once more if a delivered one was swallowed."""
        if self.received is not None and self.raising:
            self._delivered = True
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
