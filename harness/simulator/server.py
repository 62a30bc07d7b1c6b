"""The simulator's I/O: a websockets asyncio server running one SimSession per connection.

Messages are handed to the session straight from ``data_received`` (connection.py: stamped with the
kernel's arrival instant of their bytes, harness/kstamp.py), the session's actions are executed in order
on the spot - sends are synchronous and non-blocking - and timers go on the event loop. A lag
monitor samples event-loop drift every 50 ms: if the simulator is overloaded, its stats say so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import gc
import logging
import time
from collections import deque
from typing import Any

import numpy as np
import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

from ..histogram import MsHistogram
from .actions import Action, Close, Compute, Record, Send, SendRaw, Timer
from .connection import MAX_MESSAGE, StampedConnection
from .handshake import Handshake, check, reject
from .profiles import Profile, load_profile, rng_for
from .quotas import (CAPACITY, KIND_HEADER, THROTTLED_CONNECTIONS, ResourceQuota, capacity_429, connections_429,
                     throttle_record)
from .replies import select_replies
from .reply_bank import ReplyBank
from .session import SessionSetup, SimSession, SimStats
from .transcribe import Transcriber
from .truth import TruthLog
from .vad_pass import VadPass

log = logging.getLogger("voiceload.simulator")
PATH = "/voice-live/realtime"
LAG_INTERVAL_S = 0.05
LAG_SAMPLES_KEPT = 72_000  # one hour of 50 ms samples
PRELOAD_FORMATS = ("pcm16", "pcm16_8000hz", "pcm16_16000hz", "g711_ulaw", "g711_alaw")


class _Link:
    """Executes one session's actions on its socket, in order, synchronously, plus loop timers.

    Sends go through ``broadcast`` (websockets' synchronous, non-blocking send): no task and no
    await per frame, so the order of actions is the order on the wire by construction. A client
    that stops reading is cut off once MAX_BUFFERED bytes pile up instead of growing memory forever.
    """

    MAX_BUFFERED = 64 * 1024 * 1024

    def __init__(self, sim: "Simulator", ws: StampedConnection, session: SimSession) -> None:
        self.sim, self.ws, self.session = sim, ws, session
        self.loop = asyncio.get_running_loop()
        self.targets = (ws,)
        self.timers: dict[int, asyncio.TimerHandle] = {}
        self._next_timer = 0
        self.closed = False
        self.close_task: asyncio.Task[None] | None = None

    def dispatch(self, actions: list[Action]) -> None:
        sim = self.sim
        for a in actions:
            kind = type(a)
            if kind is Send:
                if self.closed:
                    continue
                data = orjson.dumps(a.event)
                if a.truth is not None:
                    a.truth.stamp(a.instant)  # type: ignore[arg-type]
                broadcast(self.targets, data, text=True)
                sim.messages_out += 1
            elif kind is Timer:
                key = self._next_timer
                self._next_timer += 1
                delay = (a.at_ns - time.monotonic_ns()) / 1e9
                self.timers[key] = self.loop.call_later(max(0.0, delay), self._fire, key, a.fn)
            elif kind is Record:
                sim.truth.write(a.truth)
            elif kind is Compute:
                fut = self.loop.run_in_executor(sim.executor, a.work)
                fut.add_done_callback(functools.partial(self._computed, a.then))
            elif kind is SendRaw:
                if not self.closed:
                    broadcast(self.targets, a.data)
            elif kind is Close:
                if self.closed:
                    continue
                self.closed = True
                if a.abort:
                    self.ws.transport.abort()
                else:
                    self.close_task = asyncio.ensure_future(self.ws.close(a.code, a.reason))
        transport = self.ws.transport
        if not self.closed and transport.get_write_buffer_size() > self.MAX_BUFFERED:
            log.warning("session %s: client is not reading, aborting", self.session.id)
            self.closed = True
            transport.abort()

    def _computed(self, then: Any, fut: asyncio.Future[Any]) -> None:
        if self.closed or fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.error("session %s: background work failed: %r", self.session.id, exc)
            return
        self._vad_first()
        self.dispatch(then(fut.result(), time.monotonic_ns()))

    def _fire(self, key: int, fn: Any) -> None:
        self.timers.pop(key, None)
        if not self.closed:
            self._vad_first()
            self.dispatch(fn(time.monotonic_ns()))

    def _vad_first(self) -> None:
        """VAD batches due before this timer/result: decided first, as on the spot. The loop pass runs
        now for every session due (still stacked) rather than this one deciding alone."""
        if self.session.input.due:
            if self.sim.vad_pass is not None:
                self.sim.vad_pass.run()
            self.dispatch(self.session.catch_up())  # not queued in the pass (nothing, normally)

    def shutdown(self) -> None:
        self.closed = True
        for h in self.timers.values():
            h.cancel()
        self.timers.clear()
        for a in self.session.catch_up() + self.session.connection_lost():
            if type(a) is Record:
                self.sim.truth.write(a.truth)


class Simulator:
    """The embedded Voice Live simulator. ``await start()``/``await stop()`` on a running loop."""

    def __init__(self, profile: str | Profile | None = None, *, truth_log: str | None = None, seed: int | None = None,
                 host: str = "127.0.0.1", port: int = 0, overrides: dict[str, Any] | None = None,
                 fixtures_dir: str = "audio_fixtures", replies: list[Any] | None = None,
                 kernel_stamps: bool = True, ssl_context: Any = None,
                 extra_fixture_dirs: tuple[str, ...] = ()) -> None:
        self.ssl_context = ssl_context  # serve wss:// (harness/tlsconf.py), sans-I/O in each connection (tls.py)
        self.profile = load_profile(profile, overrides)
        self.seed = self.profile.seed if seed is None else int(seed)
        self.host, self.port = host, port
        self.truth = TruthLog(truth_log)
        self.bank = ReplyBank(select_replies(replies, self.profile.replies, self.profile.source))
        self.transcriber = Transcriber(fixtures_dir, extra_fixture_dirs)
        self.counters = SimStats()
        self.quota = ResourceQuota(self.profile.quotas)  # this process is one resource
        self.handshakes = 0
        self.rejected: dict[int, int] = {}
        self.sessions_total = 0
        self.sessions_active = 0
        self.reserved = 0
        self.messages_out = 0
        self.lag_ms: deque[float] = deque(maxlen=LAG_SAMPLES_KEPT)
        self.kernel_stamps = kernel_stamps
        self.rx_delays = MsHistogram()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-work")
        self.started_at = 0.0
        self._server: Any = None
        self._lag_task: asyncio.Task[None] | None = None
        self.vad_pass: VadPass | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.ssl_context is not None else 'ws'}://{host}:{self.port}"

    async def start(self) -> None:
        # Everything slow happens before the first client: reply audio in every SDK output format,
        # fixture fingerprints; then freeze what survives so GC never walks it again.
        chunk = self.profile.chunk_ms
        fixed = max(10, int(round(chunk.value / 10.0)) * 10) if chunk.kind == "fixed" else None
        self.vad_pass = VadPass(asyncio.get_running_loop().call_soon)
        self.bank.preload(PRELOAD_FORMATS, fixed)
        self.transcriber.preload()
        gc.collect()
        gc.freeze()
        self._server = await serve(self._handler, self.host, self.port, process_request=self._process_request,
                                   select_subprotocol=_select_subprotocol, compression=None, max_size=MAX_MESSAGE,
                                   max_queue=None, ping_interval=None,
                                   create_connection=functools.partial(  # type: ignore[arg-type]
                                       StampedConnection, kernel_stamps=self.kernel_stamps, rx_delays=self.rx_delays,
                                       ssl_context=self.ssl_context),  # TLS in the connection (tls.py)
                                   open_timeout=30, close_timeout=5)
        self.port = self._server.sockets[0].getsockname()[1]
        self.started_at = time.monotonic()
        self._lag_task = asyncio.create_task(self._lag_monitor())

    async def stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.truth.close()

    async def _lag_monitor(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(LAG_INTERVAL_S)
            self.lag_ms.append(max(0.0, (loop.time() - t0 - LAG_INTERVAL_S) * 1000.0))

    # --- handshake ----------------------------------------------------------------------------------
    async def _process_request(self, conn: StampedConnection, request: Request) -> Response | None:
        attempt = self.handshakes
        self.handshakes += 1
        verdict = check(request.path, request.headers, self.profile.auth)
        f = self.profile.faults
        now = time.monotonic_ns()
        if verdict.ok:
            retry = self.quota.connection_retry_after(now)
            if retry is not None:
                body, headers = connections_429(self.profile.quotas, retry)
                verdict = Handshake(status=429, body=body, headers=headers, query=verdict.query)
                self._throttled(THROTTLED_CONNECTIONS, now, attempt=attempt, retry_after_s=round(retry, 3),
                                limit=self.profile.quotas.connections_per_minute,
                                window_s=self.profile.quotas.window_s,
                                in_window=self.quota.connections_in_window(now))
            elif f.max_sessions is not None and self.reserved >= f.max_sessions:
                verdict = reject(429, "429", f"Too many concurrent sessions (limit {f.max_sessions}). Please retry "
                                 f"after {f.retry_after_s:g} seconds.",
                                 [("Retry-After", f"{f.retry_after_s:g}"), (KIND_HEADER, CAPACITY)])
                self._throttled(CAPACITY, now, attempt=attempt, reason="max_sessions")
            elif self.profile.fault_hits("handshake_429", attempt, seed=self.seed):
                body, headers = capacity_429(f.retry_after_s)
                verdict = Handshake(status=429, body=body, headers=headers, query=verdict.query)
                self._throttled(CAPACITY, now, attempt=attempt, reason="handshake_429")
            elif self.profile.fault_hits("handshake_503", attempt, seed=self.seed):
                verdict = reject(503, "ServiceUnavailable", "The service is temporarily unable to process your "
                                 "request. Please try again later.", [("Retry-After", f"{f.retry_after_s:g}")])
        log.info("handshake %d: %s", attempt, verdict.describe())
        if not verdict.ok:
            self.rejected[verdict.status] = self.rejected.get(verdict.status, 0) + 1
            resp = conn.respond(verdict.status, orjson.dumps(verdict.body).decode())
            resp.headers["Content-Type"] = "application/json"
            for k, v in verdict.headers:
                resp.headers[k] = v
            return resp
        self.quota.admit_connection(now)
        self.reserved += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.reserved -= 1

        conn.on_lost = release
        conn.verdict = verdict
        if self.profile.fault_hits("slow_handshake", attempt, seed=self.seed):
            await asyncio.sleep(f.slow_handshake_ms / 1000.0)
        return None

    def _throttled(self, kind: str, now_ns: int, **fields: Any) -> None:
        self.quota.note(kind)
        self.truth.write(throttle_record(kind, now_ns, time.time_ns(), **fields))

    # --- sessions -----------------------------------------------------------------------------------
    async def _handler(self, ws: StampedConnection) -> None:
        verdict = ws.verdict
        if verdict is None or ws.request is None or ws.request.path.split("?")[0].rstrip("/") != PATH:
            await ws.close(1008, "unexpected connection")
            return
        index = self.sessions_total
        self.sessions_total += 1
        self.sessions_active += 1
        setup = SessionSetup(api_version=verdict.api_version, model=verdict.model, agent=verdict.agent,
                             session_index=index, seed=self.seed, profile=self.profile, bank=self.bank,
                             transcriber=self.transcriber, stats=self.counters, quota=self.quota, defer_vad=True)
        session = SimSession(setup, time.time_ns())
        link = _Link(self, ws, session)
        receive, dispatch, inp = session.receive, link.dispatch, session.input
        assert self.vad_pass is not None
        vad_due = self.vad_pass.add

        def on_message(data: bytes, mono: int, wall: int) -> None:
            if link.closed:
                return
            try:
                actions = receive(data, mono, wall)
            except Exception:  # a bug must not take the server down; the client sees close 1011
                log.exception("session %s crashed", session.id)
                dispatch([Close(1011, "internal simulator error")])
                return
            if actions:
                dispatch(actions)
            if inp.due:  # this append completed a VAD batch: decided with the others due this pass
                vad_due(link)

        try:
            dispatch(session.start(time.monotonic_ns()))
            ws.on_message = on_message
            early, ws.early = ws.early, []
            for data, mono, wall in early:
                on_message(data, mono, wall)
            await ws.wait_closed()
        finally:
            link.shutdown()
            if link.close_task is not None and not link.close_task.done():
                link.close_task.cancel()
            self.sessions_active -= 1
            if ws.on_lost is not None:
                ws.on_lost()

    # --- observability ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        lag = np.fromiter(self.lag_ms, dtype=np.float64) if self.lag_ms else np.zeros(1)
        c, rx = self.counters, self.rx_delays
        return {
            "profile": self.profile.name, "seed": self.seed, "url": self.url,
            "uptime_s": round(time.monotonic() - self.started_at, 3) if self.started_at else 0.0,
            "handshakes": self.handshakes, "rejected": dict(self.rejected),
            "sessions_total": self.sessions_total, "sessions_active": self.sessions_active,
            "messages_in": c.messages_in, "messages_out": self.messages_out, "appends": c.appends,
            "audio_in_s": round(c.audio_in_ms / 1000.0, 3), "turns_committed": c.turns_committed,
            "responses": c.responses, "responses_by_status": dict(c.by_status), "faults": dict(c.faults),
            "errors_sent": c.errors_sent, "truth_lines": self.truth.count,
            "quotas": {"limits": dataclasses.asdict(self.profile.quotas), "throttled": dict(self.quota.throttled),
                       "tokens_total": round(self.quota.tokens_total)},
            "loop_lag_ms": {"samples": len(self.lag_ms), "p50": round(float(np.percentile(lag, 50)), 3),
                            "p99": round(float(np.percentile(lag, 99)), 3), "max": round(float(lag.max()), 3)},
            # how late a user-space receive stamp would have been; the truth log uses the kernel's
            "rx_stamp": "kernel" if rx.n else "user",
            "rx_stamp_delay_ms": {"reads": rx.n, "p50": _r(rx.percentile(50)), "p99": _r(rx.percentile(99)),
                                  "max": _r(rx.max_ms) if rx.n else None},
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _select_subprotocol(conn: ServerConnection, offered: Any) -> str | None:
    """Echo ``realtime`` if the client offers it; accept clients that offer nothing (the SDK)."""
    return "realtime" if "realtime" in offered else None


__all__ = ["Simulator", "PATH", "rng_for"]
