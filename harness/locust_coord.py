"""Distributed Locust: the master is the single source of truth for connection budget and arrivals.

A resource's connection quota holds across all workers, so no worker may decide alone when to
connect. Before each connection attempt a worker asks the master (custom message
``voiceload_ask``, shared notes §3.2); the master grants a slot of the resource's
:class:`~harness.quota.ConnectionBudget` when one is free (``voiceload_answer``) and the worker
reports the handshake's end (``voiceload_done``), which is when the slot's window starts to run out.
A worker therefore opens exactly the connections it was granted, never more. Workers that join
simply start asking; a worker that leaves or goes missing has its queued asks dropped and its
in-flight slots closed by the master. Arrivals (harness/arrivals.py) are handed out the same way:
an idle user asks for the next arrival and gets its delay on the master's clock.

On a local runner the same objects are used in-process, without messages.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any, Callable

import gevent
import gevent.event

from .arrivals import ArrivalSchedule, ArrivalSpec
from .quota import NO_BUDGET, ConnectionBudget, Slot

log = logging.getLogger("voiceload")
ASK, ANSWER, DONE = "voiceload_ask", "voiceload_answer", "voiceload_done"
WAITING_LOG_EVERY_S = 10.0


class Coordinator:
    """Master (or local) side: budgets per resource and the arrival schedule of one test."""

    def __init__(self, arrivals: ArrivalSpec | None = None, runner: Any = None) -> None:
        self.runner = runner
        self.budgets: dict[str, ConnectionBudget] = {}
        self.slots: dict[str, Slot] = {}
        self.slot_owner: dict[str, str] = {}
        self.cancelled: set[str] = set()
        self.t0 = time.monotonic()
        self.schedule = ArrivalSchedule(arrivals.times()) if arrivals is not None else None
        self._last_log = 0.0
        self._reaper = gevent.spawn(self._reap_loop) if runner is not None else None

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.kill(block=False)

    def _reap_loop(self) -> None:
        while True:
            gevent.sleep(1.0)
            self._reap()

    # -- in-process API (local runner, and what the message handlers call) -----------------------------
    def budget(self, resource: str, per_window: int, window_s: float) -> ConnectionBudget:
        b = self.budgets.get(resource)
        if b is None:
            b = self.budgets[resource] = ConnectionBudget(per_window=per_window, window_s=window_s)
        return b

    def next_arrival(self) -> tuple[int, float] | None:
        """(index, delay in seconds from now) of the next arrival, or None when the schedule is spent."""
        if self.schedule is None:
            return None
        nxt = self.schedule.next()
        if nxt is None:
            return None
        i, at = nxt
        return i, self.t0 + at - time.monotonic()

    @property
    def waiting(self) -> int:
        return sum(b.waiting for b in self.budgets.values())

    def summary(self) -> dict[str, Any]:
        return {r: {"connections_per_window": b.per_window, "window_s": b.window_s, "granted": b.granted,
                    "waited_s": round(b.waited_s, 3)} for r, b in self.budgets.items()}

    # -- master: messages -----------------------------------------------------------------------------------
    def on_ask(self, environment: Any, msg: Any) -> None:
        data, node = msg.data or {}, msg.node_id
        if data.get("kind") == "budget":
            gevent.spawn(self._grant, node, data)
        elif data.get("kind") == "arrival":
            nxt = self.next_arrival()
            self._answer(node, data["id"], {"done": True} if nxt is None else {"i": nxt[0], "delay_s": nxt[1]})

    def on_done(self, environment: Any, msg: Any) -> None:
        rid = (msg.data or {}).get("id")
        slot = self.slots.pop(rid, None)
        self.slot_owner.pop(rid, None)
        if slot is not None:
            slot.done()
        else:  # cancelled before the grant: the grant greenlet drops it
            self.cancelled.add(rid)

    def _alive(self, node: str) -> bool:
        clients = getattr(self.runner, "clients", None)
        if clients is None:
            return True
        worker = clients.get(node)
        return worker is not None and worker.state != "missing"

    def _grant(self, node: str, data: dict[str, Any]) -> None:
        rid = data["id"]
        budget = self.budget(str(data["resource"]), int(data["per_window"]), float(data["window_s"]))
        slot = budget.acquire(lambda: rid in self.cancelled or not self._alive(node))
        self.cancelled.discard(rid)
        if slot is None:
            return
        self.slots[rid], self.slot_owner[rid] = slot, node
        self._answer(node, rid, {"ok": True, "waited_s": slot.waited_s})

    def _reap(self) -> None:
        """Close the in-flight slots of workers that are gone (they will never say done)."""
        for rid, node in list(self.slot_owner.items()):
            if not self._alive(node):
                self.slot_owner.pop(rid, None)
                slot = self.slots.pop(rid, None)
                if slot is not None:
                    slot.done()
        now = time.monotonic()
        if self.waiting and now - self._last_log >= WAITING_LOG_EVERY_S:
            self._last_log = now
            log.info("voiceload: %d callers waiting for connection budget (%s)", self.waiting,
                     ", ".join(f"{r}: {b.per_window} per {b.window_s:g} s" for r, b in self.budgets.items()))

    def _answer(self, node: str, rid: str, data: dict[str, Any]) -> None:
        self.runner.send_message(ANSWER, {"id": rid, **data}, client_id=node)


class LocalLink:
    """A local runner's users talk to the coordinator directly."""

    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord

    def gate(self, endpoint: Any, cancelled: Callable[[], bool]) -> Any:
        lim = endpoint.limits
        if lim.connections_per_minute is None:
            return NO_BUDGET
        budget = self.coord.budget(endpoint.resource or endpoint.name, int(lim.connections_per_minute), lim.window_s)
        return budget.acquire(cancelled)

    def next_arrival(self, cancelled: Callable[[], bool]) -> tuple[int, float] | None:
        return self.coord.next_arrival()

    @property
    def waiting(self) -> int:
        return self.coord.waiting


class _RemoteSlot:
    def __init__(self, link: "WorkerLink", rid: str, waited_s: float) -> None:
        self.link, self.rid, self.waited_s = link, rid, waited_s
        self._done = False

    def done(self) -> None:
        if not self._done:
            self._done = True
            self.link.runner.send_message(DONE, {"id": self.rid})


class WorkerLink:
    """A worker asks the master for each connection slot and each arrival."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.pending: dict[str, gevent.event.AsyncResult] = {}
        self._ids = itertools.count()
        self.waiting = 0

    def on_answer(self, environment: Any, msg: Any) -> None:
        data = msg.data or {}
        res = self.pending.get(data.get("id"))
        if res is not None:
            res.set(data)
        elif data.get("ok"):  # granted after we gave up: hand the slot back at once
            self.runner.send_message(DONE, {"id": data.get("id")})

    def _ask(self, kind: str, data: dict[str, Any], cancelled: Callable[[], bool]) -> tuple[str, dict | None]:
        rid = f"{self.runner.client_id}-{next(self._ids)}"
        res = self.pending[rid] = gevent.event.AsyncResult()
        try:
            self.runner.send_message(ASK, {"id": rid, "kind": kind, **data})
            while True:
                try:
                    return rid, res.get(timeout=0.5)
                except gevent.Timeout:
                    if cancelled():
                        self.runner.send_message(DONE, {"id": rid})  # drop the ask (or close a grant in flight)
                        return rid, None
        finally:
            self.pending.pop(rid, None)

    def gate(self, endpoint: Any, cancelled: Callable[[], bool]) -> Any:
        lim = endpoint.limits
        if lim.connections_per_minute is None:
            return NO_BUDGET
        t0 = time.monotonic()
        self.waiting += 1
        try:
            rid, ans = self._ask("budget", {"resource": endpoint.resource or endpoint.name,
                                            "per_window": int(lim.connections_per_minute),
                                            "window_s": lim.window_s}, cancelled)
        finally:
            self.waiting -= 1
        return None if ans is None else _RemoteSlot(self, rid, time.monotonic() - t0)

    def next_arrival(self, cancelled: Callable[[], bool]) -> tuple[int, float] | None:
        _, ans = self._ask("arrival", {}, cancelled)
        if ans is None or ans.get("done"):
            return None
        return int(ans["i"]), float(ans["delay_s"])


def register(runner: Any, get_coord: Callable[[], Coordinator | None], link: WorkerLink | None) -> None:
    """At init: the master serves asks through whichever Coordinator the current test has."""
    if link is not None:
        runner.register_message(ANSWER, link.on_answer)
        return

    def on_ask(environment: Any, msg: Any) -> None:
        coord = get_coord()
        if coord is not None:
            coord.on_ask(environment, msg)

    def on_done(environment: Any, msg: Any) -> None:
        coord = get_coord()
        if coord is not None:
            coord.on_done(environment, msg)

    runner.register_message(ASK, on_ask)
    runner.register_message(DONE, on_done)
