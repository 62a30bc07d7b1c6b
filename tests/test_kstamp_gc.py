"""Kernel receive stamps on both ends, and the engine's memory discipline under real-time GC mode.

Through real loopback sockets: the simulator's truth log must use the kernel's arrival instants
(harness/kstamp.py), an ended session must be freed by reference counting alone (no cycles for a
frozen heap to leak), and real-time GC mode must hand the heap back when the last run ends.
"""

from __future__ import annotations

import dataclasses
import gc
import weakref
from pathlib import Path

import pytest

from harness import kstamp
from harness.client.endpoints import embedded_endpoint
from harness.client.gcmode import realtime_gc
from harness.client.session import CallerSession, SessionOptions, prepare
from harness.histogram import MsHistogram
from harness.scenario import load_scenario
from harness.simulator import start_simulator
from harness.tlsconf import self_signed, server_context

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def one_turn():
    sc = load_scenario(ROOT / "scenarios" / "smoke.yaml")
    sc = dataclasses.replace(sc, conversation=sc.conversation[:1])
    prepare(sc)
    return sc


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
def test_both_ends_stamp_reads_with_the_kernel_arrival_instant(one_turn, tls, tmp_path):
    """Over wss:// too: the caller decrypts sans-I/O (client/tlsio.py); the simulator's asyncio TLS layer
    reads the TCP socket, whose reads keep their kernel stamps (kstamp.stamp_asyncio_reads)."""
    files = self_signed(tmp_path / "tls") if tls else None
    ctx = server_context(files.cert, files.key) if files else None
    with start_simulator("ideal", ssl_context=ctx) as sim:
        assert sim.url.startswith("wss://" if tls else "ws://")
        s = CallerSession(one_turn, embedded_endpoint("e", sim.url, files.ca if files else None),
                          SessionOptions(session_id="k"))
        rec = s.run()
        stats = sim.simulator.stats()
    assert rec.outcome == "ok" and rec.turns_recorded == 1
    assert s.transport.kernel_stamps and s.transport.stamp_delays.n > 10
    assert stats["rx_stamp"] == "kernel" and stats["rx_stamp_delay_ms"]["reads"] > 50
    # a user-space stamp comes after the kernel's: the delays are never negative
    assert s.transport.stamp_delays.counts[0] <= s.transport.stamp_delays.n and s.transport.stamp_delays.max_ms >= 0


def test_user_space_stamps_when_kernel_stamps_are_off(one_turn):
    with start_simulator("ideal") as sim:
        s = CallerSession(one_turn, embedded_endpoint("e", sim.url),
                          SessionOptions(session_id="u", kernel_stamps=False))
        rec = s.run()
    assert rec.outcome == "ok" and not s.transport.kernel_stamps and s.transport.stamp_delays.n == 0


def test_an_ended_session_is_freed_without_the_cyclic_collector(one_turn):
    with start_simulator("ideal") as sim:
        ep = embedded_endpoint("e", sim.url)
        CallerSession(one_turn, ep, SessionOptions(session_id="warm")).run()
        gc.collect()
        gc.disable()
        try:
            s = CallerSession(one_turn, ep, SessionOptions(session_id="c"))
            rec = s.run()
            ref, mic, transport = weakref.ref(s), weakref.ref(s.mic), weakref.ref(s.transport)
            del s
            alive = [name for name, r in (("session", ref), ("mic", mic), ("transport", transport)) if r() is not None]
        finally:
            gc.enable()
    assert rec.outcome == "ok"
    assert alive == [], f"kept alive only by reference cycles: {alive}"


def test_realtime_gc_is_shared_and_hands_the_heap_back():
    gc.unfreeze()  # an in-thread simulator earlier in this process freezes its startup heap
    assert gc.get_freeze_count() == 0
    release_a = realtime_gc(period_s=0.05)
    release_b = realtime_gc(period_s=0.05)
    assert gc.get_freeze_count() > 0
    release_a()
    release_a()  # twice is harmless
    assert gc.get_freeze_count() > 0  # b still runs
    release_b()
    assert gc.get_freeze_count() == 0


def test_kernel_stamp_parsing_and_asyncio_guard():
    import socket
    import struct

    sec, nsec = 1_700_000_000, 123_456_789
    anc = [(socket.SOL_SOCKET, kstamp.SO_TIMESTAMPNS, struct.pack("@ll", sec, nsec))]
    assert kstamp.wall_ns(anc) == sec * 1_000_000_000 + nsec
    assert kstamp.wall_ns([]) == 0 and kstamp.mono_ns([]) == 0

    class NotATransport:
        _sock = object()

    assert kstamp.stamp_asyncio_reads(NotATransport()) == 0
    assert kstamp.take_read_stamp() == 0


def test_a_read_stamp_dates_only_its_own_sockets_data():
    """A TLS read that completes no record leaves its stamp behind: another connection must not take it."""
    import socket

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        a.__class__ = kstamp._StampingSocket  # what stamp_asyncio_reads does to a TCP socket
        b.sendall(b"x")
        buf = bytearray(8)
        assert a.recv_into(buf) == 1 and buf[:1] == b"x"
        kstamp._last.wall_ns = 123  # as if the kernel had stamped that read
        assert kstamp.take_read_stamp(a.fileno() + 1000) == 0  # another socket's data: not dated by it
        assert kstamp.take_read_stamp(a.fileno()) == 123
        assert kstamp.take_read_stamp(a.fileno()) == 0  # taken once


def test_histogram_percentiles_merge_and_copy():
    a, b = MsHistogram(), MsHistogram()
    for ms in (0.05, 0.15, 0.25, 5.0):
        a.add(ms)
    for ms in (150.0, -1.0):  # overflow and a clock step backwards land in the edge bins
        b.add(ms)
    snap = a.copy()
    a.merge(b)
    assert a.n == 6 and a.max_ms == 150.0 and a.counts[a.BINS] == 1 and a.counts[0] == 2
    assert snap.n == 4 and snap.percentile(50) == pytest.approx(0.2) and snap.percentile(100) == 5.0
    assert MsHistogram().percentile(99) is None
    assert snap.summary("late") == {"late_p50_ms": 0.2, "late_p99_ms": 5.0, "late_max_ms": 5.0}
    assert MsHistogram().summary("x") == {"x_p50_ms": None, "x_p99_ms": None, "x_max_ms": None}
