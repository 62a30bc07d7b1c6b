"""Cross-session VAD: the sessions whose batch fell due in one event-loop pass, classified together.

The VAD's spectral step costs about as much per call as per 100 ms of audio (FFT and reduction
overheads), so the server leaves each due batch pending (``SessionSetup.defer_vad``) and runs one
stacked pass (harness.vad.feed_many) for all of them at the start of the next loop pass, before the
next reads. Results are row-wise, so identical to per-session classification; anything else that
reaches a session first (a message, a timer) makes it decide its own batch on the spot
(``SimSession.catch_up``), so its actions keep the per-session order.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

from ..vad import feed_many
from .actions import Action, Close
from .session import SimSession

log = logging.getLogger("voiceload.simulator")


class Link(Protocol):
    """What the pass needs of a connection (server._Link)."""

    session: SimSession
    closed: bool

    def dispatch(self, actions: list[Action]) -> None: ...


class VadPass:
    """Collects links whose session has a due VAD batch; ``run`` (scheduled once per pass) decides them."""

    def __init__(self, schedule: Callable[[Callable[[], None]], Any]) -> None:
        self._schedule = schedule  # loop.call_soon: runs after this pass, before the next reads
        self._due: list[Link] = []

    def add(self, link: Link) -> None:
        if not self._due:
            self._schedule(self.run)
        self._due.append(link)

    def run(self) -> None:
        due, self._due = self._due, []
        seen: set[int] = set()
        live = []
        for link in due:  # closed links: shutdown() catches up their records
            s = link.session
            if s.input.due and not s.closed and not link.closed and id(s) not in seen:
                seen.add(id(s))
                live.append(link)
        if not live:
            return
        taken, owner = [], []
        for link in live:
            inp = link.session.input
            for batch in inp.take_due():
                taken.append((inp.vad, batch[0]))
                owner.append((link, batch))
        out: dict[int, list[Action]] = {}
        failed: set[int] = set()
        for (link, (_, due_ns, position, arrivals)), events in zip(owner, feed_many(taken)):
            key = id(link)
            if key in failed:
                continue
            try:
                out.setdefault(key, []).extend(link.session.decided(events, due_ns, position, arrivals))
            except Exception:  # one session's bug must not take the others' decisions down
                log.exception("session %s crashed", link.session.id)
                failed.add(key)
                out.pop(key, None)
                link.dispatch([Close(1011, "internal simulator error")])
        for link in live:
            actions = out.get(id(link))
            if actions:
                link.dispatch(actions)
