"""Distributed Locust: the master is the single source of truth for connection budget and arrivals.

**Connection budget.** A resource's quota (N new connections per rolling window) holds across all
workers. The master splits N into *shares*, one per live worker, and sends each worker its share
(custom message ``voiceload_share``, shared notes §3.2); a worker paces its own connections with a
local :class:`~harness.quota.ConnectionBudget` of exactly its share, so it never opens more than
its share and needs no round trip per connection (a round trip through busy processes took
0.3–0.8 s on a loaded 2-core machine, which stretched every step of a ramp). When workers join or
leave the master re-splits: a share that shrinks is sent at once, a share that grows only one window
later, so in every rolling window the shares in force add up to at most N (a window that sees the
old shares ends before any grown share starts). A worker without a share yet waits.

**Arrivals** (harness/arrivals.py) are handed out by the master one at a time: an idle user asks
(``voiceload_ask``) and gets the next arrival's delay on the master's clock (``voiceload_answer``).

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
from .limits import Limits
from .quota import NO_BUDGET, ConnectionBudget

log = logging.getLogger("voiceload")
ASK, ANSWER, SHARE = "voiceload_ask", "voiceload_answer", "voiceload_share"
REBALANCE_EVERY_S = 0.5


def split(n: int, workers: list[str]) -> dict[str, int]:
    """N connections per window over the workers: equal shares, the remainder to the first ones."""
    if not workers:
        return {}
    base, extra = divmod(int(n), len(workers))
    return {w: base + (i < extra) for i, w in enumerate(sorted(workers))}


class Coordinator:
    """Master (or local) side of one test: shares of each resource's budget, and the arrival schedule."""

    def __init__(self, resources: dict[str, Limits], arrivals: ArrivalSpec | None = None, runner: Any = None) -> None:
        self.runner = runner
        self.resources = {r: lim for r, lim in resources.items() if lim.connections_per_minute is not None}
        self.budgets = {r: ConnectionBudget(per_window=int(lim.connections_per_minute), window_s=lim.window_s)
                        for r, lim in self.resources.items()}  # the local runner's; a master's stay unused
        self.shares: dict[str, dict[str, int]] = {}  # worker -> resource -> share in force
        self.last_sent: dict[str, dict[str, int]] = {}  # worker -> resource -> last share sent (kept for run.json)
        self.pending: list[tuple[float, str, str, int]] = []  # (due, worker, resource, grown share)
        self.t0 = time.monotonic()
        self.schedule = ArrivalSchedule(arrivals.times()) if arrivals is not None else None
        self._loop = gevent.spawn(self._rebalance_loop) if runner is not None and self.resources else None

    def close(self) -> None:
        if self._loop is not None:
            self._loop.kill(block=False)

    def next_arrival(self) -> tuple[int, float] | None:
        """(index, delay in seconds from now) of the next arrival, or None when the schedule is spent."""
        if self.schedule is None:
            return None
        nxt = self.schedule.next()
        if nxt is None:
            return None
        i, at = nxt
        return i, self.t0 + at - time.monotonic()

    def summary(self) -> dict[str, Any]:
        if self.runner is None:
            return {r: {"connections_per_window": b.per_window, "window_s": b.window_s, "granted": b.granted,
                        "waited_s": round(b.waited_s, 3)} for r, b in self.budgets.items()}
        return {r: {"connections_per_window": int(lim.connections_per_minute), "window_s": lim.window_s,
                    "shares": {w: s.get(r, 0) for w, s in sorted(self.last_sent.items())}}
                for r, lim in self.resources.items()}

    # -- master: shares --------------------------------------------------------------------------------------
    def _workers(self) -> list[str]:
        clients = getattr(self.runner, "clients", None) or {}
        return sorted(w for w, node in clients.items() if node.state != "missing")

    def rebalance(self, now: float | None = None) -> None:
        """Send each live worker its share: shrinking at once, growing (or a newcomer's) one window later."""
        now = time.monotonic() if now is None else now
        workers = self._workers()
        for w in list(self.shares):
            if w not in workers:  # gone: its share lapses; the others grow only a window later
                del self.shares[w]
        self.pending = [p for p in self.pending if p[1] in workers]
        for resource, lim in self.resources.items():
            first = not any(resource in s for s in self.shares.values())  # test start: nothing to overlap
            for w, n in split(int(lim.connections_per_minute), workers).items():
                cur = self.shares.get(w, {}).get(resource)
                waiting = [p for p in self.pending if p[1] == w and p[2] == resource]
                if n == cur:
                    self.pending = [p for p in self.pending if p not in waiting]
                elif first or (cur is not None and n < cur):
                    self.pending = [p for p in self.pending if p not in waiting]
                    self._send(w, resource, n)
                elif not any(p[3] == n for p in waiting):  # grows, or a newcomer: after one window
                    self.pending = [p for p in self.pending if p not in waiting]
                    self.pending.append((now + lim.window_s, w, resource, n))
        due = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        for _, w, resource, n in due:
            self._send(w, resource, n)

    def _send(self, worker: str, resource: str, n: int) -> None:
        self.shares.setdefault(worker, {})[resource] = n
        self.last_sent.setdefault(worker, {})[resource] = n
        lim = self.resources[resource]
        self.runner.send_message(SHARE, {"resource": resource, "n": n, "window_s": lim.window_s}, client_id=worker)

    def _rebalance_loop(self) -> None:
        while True:
            try:
                self.rebalance()
            except Exception:  # never take the master down over a message
                log.exception("voiceload: rebalancing connection shares failed")
            gevent.sleep(REBALANCE_EVERY_S)

    # -- master: arrivals -------------------------------------------------------------------------------
    def on_ask(self, environment: Any, msg: Any) -> None:
        data, node = msg.data or {}, msg.node_id
        if data.get("kind") == "arrival":
            nxt = self.next_arrival()
            self.runner.send_message(ANSWER, {"id": data.get("id"), **({"done": True} if nxt is None else
                                                                       {"i": nxt[0], "delay_s": nxt[1]})},
                                     client_id=node)


class LocalLink:
    """A local runner's users use the coordinator's budgets and schedule directly."""

    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord

    def gate(self, endpoint: Any, cancelled: Callable[[], bool]) -> Any:
        budget = self.coord.budgets.get(endpoint.resource or endpoint.name)
        return NO_BUDGET if budget is None else budget.acquire(cancelled)

    def next_arrival(self, cancelled: Callable[[], bool]) -> tuple[int, float] | None:
        return self.coord.next_arrival()

    @property
    def waiting(self) -> int:
        return sum(b.waiting for b in self.coord.budgets.values())


class WorkerLink:
    """A worker paces its connections with its share of each budget and asks the master for arrivals."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.budgets: dict[str, ConnectionBudget] = {}
        self.pending: dict[str, gevent.event.AsyncResult] = {}
        self._ids = itertools.count()
        self._share = gevent.event.Event()

    def on_share(self, environment: Any, msg: Any) -> None:
        data = msg.data or {}
        resource, n, window_s = str(data.get("resource")), int(data.get("n", 0)), float(data.get("window_s", 60.0))
        budget = self.budgets.get(resource)
        if budget is None:
            self.budgets[resource] = ConnectionBudget(per_window=n, window_s=window_s)
        else:
            budget.per_window = n
            budget.changed.set()
        self._share.set()

    def on_answer(self, environment: Any, msg: Any) -> None:
        data = msg.data or {}
        res = self.pending.get(data.get("id"))
        if res is not None:
            res.set(data)

    def gate(self, endpoint: Any, cancelled: Callable[[], bool]) -> Any:
        lim = endpoint.limits
        if lim.connections_per_minute is None:
            return NO_BUDGET
        key = endpoint.resource or endpoint.name
        t0 = time.monotonic()
        while key not in self.budgets:  # no share from the master yet
            if cancelled():
                return None
            self._share.clear()
            self._share.wait(0.5)
        slot = self.budgets[key].acquire(cancelled)
        if slot is not None:
            slot.waited_s = time.monotonic() - t0
        return slot

    @property
    def waiting(self) -> int:
        return sum(b.waiting for b in self.budgets.values())

    def next_arrival(self, cancelled: Callable[[], bool]) -> tuple[int, float] | None:
        rid = f"{self.runner.client_id}-{next(self._ids)}"
        res = self.pending[rid] = gevent.event.AsyncResult()
        try:
            self.runner.send_message(ASK, {"id": rid, "kind": "arrival"})
            while True:
                try:
                    ans = res.get(timeout=0.5)
                    break
                except gevent.Timeout:
                    if cancelled():
                        return None
        finally:
            self.pending.pop(rid, None)
        if ans.get("done"):
            return None
        return int(ans["i"]), float(ans["delay_s"])


def register(runner: Any, get_coord: Callable[[], Coordinator | None], link: WorkerLink | None) -> None:
    """At init: workers take shares and answers; the master answers through the current test's Coordinator."""
    if link is not None:
        runner.register_message(SHARE, link.on_share)
        runner.register_message(ANSWER, link.on_answer)
        return

    def on_ask(environment: Any, msg: Any) -> None:
        coord = get_coord()
        if coord is not None:
            coord.on_ask(environment, msg)

    runner.register_message(ASK, on_ask, concurrent=True)  # answers are sent outside the receive loop
