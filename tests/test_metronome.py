"""The shared metronome (pacer.py): one greenlet paces every session's mic; semantics as before.

Absolute deadlines (never early), every frame in order, lateness recorded per frame, back-pressure
without loss or unbounded memory, and a stopped mic sends nothing more and is freed at once.
No timing thresholds: only orderings and counts that hold on any machine.
"""

from __future__ import annotations

import gc
import time
import weakref

import gevent

from harness.client.pacer import METRONOME, NS, Mic, Utterance


def frames(tag: str, n: int) -> tuple[bytes, ...]:
    return tuple(f"{tag}{i}".encode() for i in range(n))


def test_every_mic_sends_in_order_and_never_before_its_deadline():
    sent: dict[int, list[tuple[int, bytes]]] = {i: [] for i in range(40)}
    mics = []
    for i in range(40):
        m = Mic(lambda b, i=i: sent[i].append((time.monotonic_ns(), b)), frames(f"s{i}-", 7), 20)
        mics.append(m)
        m.start()
        gevent.sleep(0.0007)  # spread the phases
    utterance = mics[0].play(Utterance(frames=frames("u", 5), chunk_ms=20, speech_start_ms=20, speech_end_ms=80))
    gevent.sleep(0.5)
    for m in mics:
        m.stop()
    for i, m in enumerate(mics):
        stamps = [t for t, _ in sent[i]]
        k = len(stamps)
        assert k >= 10 and m.frames_sent == k and m.stats.n == k
        assert stamps == sorted(stamps)
        t0 = m._t0
        assert all(t >= t0 + (j + 1) * 20 * NS for j, t in enumerate(stamps)), i  # never early
    payloads = [b for _, b in sent[0]]
    i = payloads.index(b"u0")  # silence until the utterance, then its frames, then silence goes on
    assert payloads[:i] == list(frames("s0-", 7)[:i]) and payloads[i:i + 5] == list(frames("u", 5))
    assert payloads[i + 5] == frames("s0-", 7)[(i + 5) % 7]
    assert utterance.done.is_set() and len(utterance.lateness_ms) == 5 and min(utterance.lateness_ms) >= 0
    assert 0 < utterance.speech_start_ns < utterance.speech_end_ns <= utterance.sent_ns


def test_back_pressure_offers_the_same_frame_again_and_lateness_shows_it():
    out: list[bytes] = []
    busy = {"until": time.monotonic_ns() + 120 * NS}

    def send(b: bytes) -> bool:
        if time.monotonic_ns() < busy["until"]:
            return False  # a partial write is still draining
        out.append(b)
        return True

    m = Mic(send, frames("f", 100), 20)
    m.start()
    gevent.sleep(0.4)
    m.stop()
    assert out == list(frames("f", len(out))) and len(out) >= 8  # nothing lost, nothing reordered
    assert m.stats.max_ms >= 90  # the first frame waited ~100 ms past its deadline, and says so


def test_a_failed_send_releases_the_utterances_and_stops_the_mic():
    def send(b: bytes) -> bool:
        raise ConnectionError("gone")

    m = Mic(send, frames("f", 3), 20)
    u = m.play(Utterance(frames=frames("u", 3), chunk_ms=20, speech_start_ms=0, speech_end_ms=60))
    m.start()
    gevent.sleep(0.1)
    assert isinstance(m.error, ConnectionError) and not m.alive and u.done.is_set()
    later = m.play(Utterance(frames=frames("v", 3), chunk_ms=20, speech_start_ms=0, speech_end_ms=60))
    assert later.done.is_set()  # nothing will ever play it: nobody waits for it


def test_push_to_talk_idles_between_utterances_and_restarts_its_clock():
    out: list[tuple[int, bytes]] = []
    m = Mic(lambda b: out.append((time.monotonic_ns(), b)), frames("s", 3), 20, open_mic=False)
    m.start()
    gevent.sleep(0.1)
    assert out == []  # push-to-talk: silence is never sent
    m.play(Utterance(frames=frames("u", 3), chunk_ms=20, speech_start_ms=0, speech_end_ms=60))
    gevent.sleep(0.15)
    assert [b for _, b in out] == list(frames("u", 3))
    gevent.sleep(0.1)
    assert len(out) == 3
    m.play(Utterance(frames=frames("v", 2), chunk_ms=20, speech_start_ms=0, speech_end_ms=40))
    gevent.sleep(0.12)
    m.stop()
    assert [b for _, b in out][3:] == list(frames("v", 2))


def test_a_stopped_mic_sends_nothing_more_and_is_freed_by_reference_counting():
    out: list[bytes] = []
    m = Mic(out.append, frames("s", 3), 20)
    m.start()
    gevent.sleep(0.1)
    gc.collect()
    gc.disable()
    try:
        m.stop()
        n = len(out)
        ref = weakref.ref(m)
        del m
        alive = ref() is not None
    finally:
        gc.enable()
    gevent.sleep(0.1)
    assert len(out) == n and not alive
    assert all(entry[2] is not None for entry in METRONOME._heap)
