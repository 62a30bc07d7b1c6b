"""Timeline routing and turn records, on hand-built event sequences (no sockets, no clock)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.metrics import TurnContext, build_turn_record, classify, playback, word_error_rate
from harness.protocol import events as ev
from harness.records import REASONS
from harness.timeline import SessionTimeline, TurnTimeline

MS = 1_000_000
BPMS = 48.0  # pcm16 24 kHz: 48 bytes per ms


def audio_b64(ms: int, voiced_from_ms: int | None = None) -> str:
    n = int(ms * 24)
    samples = bytearray(2 * n)
    if voiced_from_ms is not None:
        for i in range(int(voiced_from_ms * 24), n):
            samples[2 * i:2 * i + 2] = (8000 if i % 2 else -8000).to_bytes(2, "little", signed=True)
    return base64.b64encode(bytes(samples)).decode()


def voiced(pcm: bytes) -> int | None:
    for i in range(0, len(pcm) - 1, 2):
        if abs(int.from_bytes(pcm[i:i + 2], "little", signed=True)) > 1000:
            return i
    return None


def turn(tl: SessionTimeline, index: int = 0, start: int = 1000, end: int = 3000) -> TurnTimeline:
    t = TurnTimeline(index=index, fixture="fx", text="turn the temperature down two degrees",
                     utterance_start_ns=start * MS, speech_start_ns=(start + 300) * MS, speech_end_ns=end * MS)
    return tl.add_turn(t)


def feed(tl: SessionTimeline, events: list[tuple[int, dict]]) -> None:
    for t_ms, e in events:
        tl.route(e, t_ms * MS, 100)


def response_events(rid: str, t0: int, n: int = 5, step: int = 50, status: str = "completed",
                    lead_ms: int = 0) -> list[tuple[int, dict]]:
    out = [(t0, ev.server_event(ev.RESPONSE_CREATED, response=ev.response_object(rid))),
           (t0 + 1, ev.server_event(ev.OUTPUT_ITEM_ADDED, response_id=rid, output_index=0,
                                    item={"id": f"item_{rid}"}))]
    for i in range(n):
        out.append((t0 + 100 + i * step, ev.server_event(
            ev.AUDIO_DELTA, response_id=rid, item_id="a", output_index=0, content_index=0,
            delta=audio_b64(100, voiced_from_ms=lead_ms if i == 0 else 0))))
        out.append((t0 + 101 + i * step, ev.server_event(ev.AUDIO_TRANSCRIPT_DELTA, response_id=rid, delta="ok ")))
    out.append((t0 + 100 + n * step, ev.server_event(ev.RESPONSE_DONE,
                                                     response=ev.response_object(rid, status=status))))
    return out


def ctx(**kw) -> TurnContext:
    return TurnContext(bytes_per_ms=BPMS, **kw)


def test_complete_turn_latencies_are_measured_from_true_speech_end():
    tl = SessionTimeline(voiced=voiced)
    t = turn(tl)
    feed(tl, [(1350, ev.server_event(ev.SPEECH_STARTED, audio_start_ms=1000, item_id="u1")),
              (3520, ev.server_event(ev.SPEECH_STOPPED, audio_end_ms=3500, item_id="u1")),
              (3525, ev.server_event(ev.COMMITTED, item_id="u1")),
              (3700, ev.server_event(ev.TRANSCRIPTION_COMPLETED, item_id="u1",
                                     transcript="Turn the temperature down two degrees."))]
         + response_events("resp_1", 3600, lead_ms=40))
    rec = build_turn_record(t, ctx(max_lag_ms=10.0))
    assert rec.reason == "complete" and rec.complete
    assert rec.vad_ms == 520.0
    assert rec.response_created_ms == 600.0
    assert rec.first_audio_ms == 700.0
    assert rec.server_response_ms == 180.0
    assert rec.first_transcript_ms == 700.0
    assert rec.response_audio_ms == pytest.approx(500.0, abs=0.1)
    assert rec.leading_silence_ms == pytest.approx(40.0, abs=0.1)
    assert rec.first_voiced_ms == pytest.approx(740.0, abs=0.1)
    assert rec.wer == 0.0
    assert rec.response_transcript == "ok ok ok ok ok "
    assert rec.marks["speech_end"] == 0.0 and rec.marks["first_audio"] == 700.0
    assert rec.marks["utterance_start"] == -2000.0


def test_barge_in_stragglers_stay_with_the_interrupted_turn():
    tl = SessionTimeline(voiced=voiced)
    t1 = turn(tl, 0, 1000, 3000)
    feed(tl, [(1350, ev.server_event(ev.SPEECH_STARTED, item_id="u1")),
              (3500, ev.server_event(ev.SPEECH_STOPPED, item_id="u1"))])
    feed(tl, response_events("resp_1", 3600, n=2)[:-1])  # streaming, not done
    t2 = turn(tl, 1, 3900, 5500)
    t2.kind = "barge_in"
    feed(tl, [(4000, ev.server_event(ev.SPEECH_STARTED, item_id="u2")),
              (4010, ev.server_event(ev.AUDIO_DELTA, response_id="resp_1", delta=audio_b64(100))),
              (4020, ev.server_event(ev.RESPONSE_DONE, response=ev.response_object(
                  "resp_1", status="cancelled", status_details={"type": "cancelled", "reason": "turn_detected"}))),
              (6000, ev.server_event(ev.SPEECH_STOPPED, item_id="u2"))]
         + response_events("resp_2", 6100))
    assert t1.status == "cancelled" and len(t1.deltas) == 3
    assert t2.response_id == "resp_2" and t2.speech_started_ns == 4000 * MS
    r1 = build_turn_record(t1, ctx())
    r2 = build_turn_record(t2, ctx(interrupted=t1))
    assert r1.reason == "cancelled" and not r1.complete
    assert r2.reason == "complete"
    assert r2.cancel_ms == pytest.approx(4020 - 4200)  # speech_start_ns = 3900 + 300


def test_superseded_response_is_ignored_by_metrics():
    tl = SessionTimeline(voiced=voiced)
    t = turn(tl, 0, 1000, 3000)
    feed(tl, [(1400, ev.server_event(ev.SPEECH_STARTED, item_id="u1"))])
    feed(tl, response_events("resp_early", 2000, n=1, status="cancelled"))
    feed(tl, response_events("resp_final", 3600, n=3))
    rec = build_turn_record(t, ctx())
    assert rec.response_id == "resp_final" and rec.reason == "complete"
    assert rec.first_audio_ms == 700.0
    assert t.superseded == ["resp_early"]


@pytest.mark.parametrize("events,closed,expected", [
    ([], False, "no_speech_detected"),
    ([(1400, {"type": ev.SPEECH_STARTED, "item_id": "u"})], False, "no_response"),
    ([(1400, {"type": ev.SPEECH_STARTED, "item_id": "u"}),
      (3600, {"type": ev.RESPONSE_CREATED, "response": {"id": "r"}})], False, "timeout"),
    ([(1400, {"type": ev.SPEECH_STARTED, "item_id": "u"})], True, "disconnected"),
    ([(1400, {"type": ev.SPEECH_STARTED, "item_id": "u"}),
      (3600, {"type": ev.ERROR, "error": {"code": "server_error", "message": "boom"}})], True, "error"),
    ([(1400, {"type": ev.SPEECH_STARTED, "item_id": "u"}),
      (3600, {"type": ev.RESPONSE_CREATED, "response": {"id": "r"}}),
      (3900, {"type": ev.RESPONSE_DONE, "response": {"id": "r", "status": "completed"}})], False, "no_audio"),
    ([(3600, {"type": ev.RESPONSE_CREATED, "response": {"id": "r"}}),
      (3601, {"type": ev.COMMITTED, "item_id": "u"}),
      (3900, {"type": ev.RESPONSE_DONE, "response": {"id": "r", "status": "failed"}})], False, "failed"),
    ([(1400, {"type": ev.SPEECH_STARTED, "item_id": "u"}),
      (3600, {"type": ev.RESPONSE_CREATED, "response": {"id": "r"}}),
      (3900, {"type": ev.RESPONSE_DONE, "response": {"id": "r", "status": "incomplete"}})], False, "incomplete"),
])
def test_reasons(events, closed, expected):
    tl = SessionTimeline()
    t = turn(tl)
    feed(tl, events)
    if closed:
        tl.close(5000 * MS, "socket closed")
    assert classify(t) == expected
    rec = build_turn_record(t, ctx())
    assert rec.reason == expected and rec.complete is False


def test_playback_underruns_and_voiced_instant():
    # 100 ms chunks arriving every 150 ms: the player runs dry 50 ms before each later chunk.
    deltas = [(i * 150 * MS, 4800) for i in range(4)]
    p = playback(deltas, BPMS, voiced_offset=4800 + 480)
    assert p.underruns == 3 and p.underrun_ms == pytest.approx(150.0)
    assert p.voiced_at_ns == 150 * MS + 10 * MS
    fast = playback([(i * 10 * MS, 4800) for i in range(4)], BPMS, None)
    assert fast.underruns == 0 and fast.underrun_ms == 0


def test_word_error_rate():
    assert word_error_rate("turn the heat down", "Turn the heat down.") == 0.0
    assert word_error_rate("turn the heat down", "turn heat up") == 0.5
    assert word_error_rate("a b c d", "") == 1.0


def test_generator_lag_marks_turn_invalid():
    tl = SessionTimeline()
    t = turn(tl)
    rec = build_turn_record(t, ctx(pacing_lateness_ms=[0.2] * 99 + [25.0], max_lag_ms=10.0))
    assert rec.pacing_late_max_ms == 25.0 and rec.generator_lag_ms == 25.0 and rec.valid is False
    rec = build_turn_record(t, ctx(pacing_lateness_ms=[0.2] * 100, loop_lag_ms=3.0, max_lag_ms=10.0))
    assert rec.valid is True and rec.generator_lag_ms == 3.0


# -- fuzzing: never an exception, always a reason from the closed set -------------------------------
_types = st.sampled_from([ev.SPEECH_STARTED, ev.SPEECH_STOPPED, ev.COMMITTED, ev.TRANSCRIPTION_COMPLETED,
                          ev.RESPONSE_CREATED, ev.OUTPUT_ITEM_ADDED, ev.AUDIO_DELTA, ev.AUDIO_TRANSCRIPT_DELTA,
                          ev.RESPONSE_DONE, ev.ERROR, ev.ITEM_CREATED, "session.updated", "weird.event", None, 7])
_ids = st.one_of(st.none(), st.sampled_from(["r1", "r2", "u1", "u2", ""]), st.integers(), st.lists(st.integers()))
_junk = st.one_of(st.none(), st.text(max_size=8), st.integers(), st.dictionaries(st.text(max_size=4), st.none()),
                  st.just("AAAA"), st.just("!!notb64"))
_event = st.fixed_dictionaries({"type": _types}, optional={
    "item_id": _ids, "response_id": _ids, "delta": _junk, "transcript": _junk, "error": _junk,
    "response": st.one_of(_junk, st.fixed_dictionaries({}, optional={"id": _ids, "status": _junk,
                                                                      "status_details": _junk})),
    "item": st.one_of(_junk, st.fixed_dictionaries({}, optional={"id": _ids}))})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), _event), max_size=40), st.booleans(), st.integers(1, 3))
def test_fuzz_routing_and_records_never_raise(events, close, n_turns):
    tl = SessionTimeline(voiced=voiced)
    turns = [turn(tl, i, 1000 + i * 3000, 3000 + i * 3000) for i in range(n_turns)]
    for t_ms, e in events:
        tl.route(e, t_ms * MS, 10)
    if close:
        tl.close(20_000 * MS)
    for t in turns:
        rec = build_turn_record(t, ctx(interrupted=turns[0] if t.index else None))
        assert rec.reason in REASONS
        assert rec.complete == (rec.reason == "complete")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.text(max_size=64)))
def test_fuzz_parser_raises_only_protocol_error(data):
    try:
        event = ev.parse(data)
    except ev.ProtocolError:
        return
    assert isinstance(event, dict) and isinstance(event["type"], str)
