"""Fuzzing the whole receive path: raw frames into CallerSession._on_message, then the turn records.

tests/test_metrics.py fuzzes the parser and the record builder as pure functions. Here random bytes
go in where the transport's reader greenlet hands them over (``_on_message(payload, t, binary)``):
garbage, truncated or deeply nested JSON, JSON that is not an object, events of every type with
missing, duplicated, mistyped or foreign ids, audio deltas of odd lengths, error events shaped any
way, a close in the middle, and events after the close. An exception there would kill the reader
greenlet and leave the session deaf, so none may escape; afterwards every started turn has exactly
one record whose reason is in the closed set.
"""

from __future__ import annotations

import base64
import dataclasses
import struct
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.client import session as session_mod
from harness.client.session import CallerSession, Endpoint, SessionOptions
from harness.protocol import events as ev
from harness.records import REASONS
from harness.scenario import load_scenario
from harness.timeline import TurnTimeline

ROOT = Path(__file__).resolve().parent.parent
MS = 1_000_000
SC = load_scenario(ROOT / "scenarios" / "smoke.yaml")
ENDPOINT = Endpoint(name="fuzz", url=lambda: "ws://127.0.0.1:9", headers=dict, display="fuzz")

TYPES = [ev.SESSION_CREATED, ev.SESSION_UPDATED, ev.ERROR, ev.WARNING, ev.SPEECH_STARTED, ev.SPEECH_STOPPED,
         ev.COMMITTED, ev.CLEARED, ev.ITEM_CREATED, ev.ITEM_TRUNCATED, ev.TRANSCRIPTION_DELTA,
         ev.TRANSCRIPTION_COMPLETED, ev.TRANSCRIPTION_FAILED, ev.RESPONSE_CREATED, ev.RESPONSE_DONE,
         ev.OUTPUT_ITEM_ADDED, ev.OUTPUT_ITEM_DONE, ev.CONTENT_PART_ADDED, ev.AUDIO_DELTA, ev.AUDIO_DONE,
         ev.AUDIO_TRANSCRIPT_DELTA, ev.TEXT_DELTA, ev.RATE_LIMITS_UPDATED, "response.function_call_arguments.delta",
         "x.unknown", ""]


def _pcm(n: int, voiced: bool) -> str:
    return base64.b64encode(b"".join(struct.pack("<h", 9000 if voiced and i % 2 else 0) for i in range(n))
                            + (b"\x01" if n % 3 == 0 else b"")).decode()  # sometimes an odd byte count


ids = st.one_of(st.sampled_from(["r1", "r2", "u1", "u2", "item_1", ""]), st.none(), st.integers(-2, 2),
                st.lists(st.integers(-5, 5), max_size=2), st.dictionaries(st.text(max_size=3), st.none(), max_size=2))
junk = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False),
                 st.text(max_size=12), st.lists(st.none(), max_size=3), st.dictionaries(st.text(max_size=4),
                                                                                        st.none(), max_size=3))
deltas = st.one_of(junk, st.builds(_pcm, st.integers(0, 300), st.booleans()), st.sampled_from(["=", "==", "A", "!!",
                                                                                               "é", "AAAA"]))
statuses = st.one_of(st.sampled_from(list(ev.RESPONSE_STATUSES) + ["weird"]), junk)
response = st.one_of(junk, st.fixed_dictionaries({}, optional={"id": ids, "status": statuses,
                                                               "status_details": st.one_of(junk, st.fixed_dictionaries(
                                                                   {}, optional={"reason": junk, "error": junk}))}))
error = st.one_of(junk, st.fixed_dictionaries({}, optional={"code": junk, "message": junk, "event_id": junk,
                                                            "type": junk}))
session = st.one_of(junk, st.fixed_dictionaries({}, optional={"id": junk, "output_audio_format": st.one_of(
    junk, st.sampled_from(["pcm16", "g711_ulaw", "pcm16_8000hz", "mp3"]))}))
event = st.fixed_dictionaries({"type": st.one_of(st.sampled_from(TYPES), junk)}, optional={
    "item_id": ids, "response_id": ids, "delta": deltas, "transcript": junk, "error": error, "response": response,
    "item": st.one_of(junk, st.fixed_dictionaries({}, optional={"id": ids})), "session": session,
    "event_id": junk})


def _deep(n: int) -> bytes:
    return b'{"type":"x","a":' + b"[" * n + b"]" * n + b"}"


raw = st.one_of(
    st.binary(max_size=80),
    st.builds(lambda e: orjson.dumps(e)[: len(orjson.dumps(e)) // 2], event),  # truncated JSON
    st.sampled_from([b"[]", b"null", b"42", b'"type"', b'{"type": 5}', b'{"type": ""}', b"\xff\xfe",
                     b'{"type":"error","error":{"event_id":["x"]}}', b'{"type":"response.done"}',
                     b'{"type":"x","n":123456789012345678901234567890}', _deep(2000), _deep(50)]),
)
CLOSE = (b"", False)
# One message: (payload, binary?) -- mostly events of every shape, some garbage, now and then a close.
message = st.one_of(*[st.tuples(st.builds(orjson.dumps, event), st.just(False))] * 5,
                    st.tuples(st.builds(orjson.dumps, event), st.booleans()),
                    st.tuples(raw, st.booleans()),
                    st.just(CLOSE))


def _happy(k: int, status: str, n_deltas: int, voiced: bool, transcript: bool) -> list[bytes]:
    """A well-formed turn k (ids u<k>/r<k>), for the fuzzer to mutate around: it reaches the deep states."""
    rid, item = f"r{k}", f"u{k}"
    evs = [ev.server_event(ev.SPEECH_STARTED, item_id=item, audio_start_ms=100),
           ev.server_event(ev.SPEECH_STOPPED, item_id=item, audio_end_ms=900),
           ev.server_event(ev.COMMITTED, item_id=item),
           ev.server_event(ev.RESPONSE_CREATED, response={"id": rid, "status": "in_progress"}),
           ev.server_event(ev.OUTPUT_ITEM_ADDED, response_id=rid, item={"id": f"o{k}"})]
    if transcript:
        evs.append(ev.server_event(ev.TRANSCRIPTION_COMPLETED, item_id=item, transcript="Turn the heat down."))
    evs += [ev.server_event(ev.AUDIO_DELTA, response_id=rid, delta=_pcm(240, voiced)) for _ in range(n_deltas)]
    evs.append(ev.server_event(ev.RESPONSE_DONE, response={"id": rid, "status": status}))
    return [orjson.dumps(e) for e in evs]


skeleton = st.builds(_happy, st.integers(0, 2), st.sampled_from(list(ev.RESPONSE_STATUSES)), st.integers(0, 3),
                     st.booleans(), st.booleans())


FORMATS = [{}, {"output_audio_format": "g711_ulaw"}, {"output_audio_format": "pcm16_8000hz"},
           {"modalities": ["text"]}]


def _session(n_turns: int, session: dict | None = None) -> tuple[CallerSession, list]:
    records: list = []
    sc = dataclasses.replace(SC, session={**SC.session, **(session or {})})
    s = CallerSession(sc, ENDPOINT, SessionOptions(session_id="fuzz", on_record=records.append))
    for i in range(n_turns):
        fx = SC.conversation[i]
        start = 1000 + 4000 * i
        turn = TurnTimeline(index=i, fixture=fx.fixture, text="turn the heat down", kind="vad",
                            utterance_start_ns=start * MS, speech_start_ns=(start + 300) * MS,
                            speech_end_ns=(start + 2000) * MS)
        s.record.turns_attempted += 1
        s._spoken.append(fx)  # as _converse does for every turn it speaks (branches may repeat a spec)
        s.timeline.add_turn(turn)
    return s, records


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(skeleton, max_size=3), st.lists(st.tuples(st.integers(0, 16_000), message), max_size=40),
       st.integers(1, 3), st.sampled_from([False, True]), st.sampled_from(FORMATS), st.data())
def test_fuzz_receive_path_never_raises_and_every_turn_gets_a_reason(skeletons, noise, n_turns, emit_midway, fmt,
                                                                     data):
    s, records = _session(n_turns, fmt)
    stream = list(noise)
    for payloads in skeletons:  # each well-formed turn lands inside the window of the turn its ids name
        k = int(orjson.loads(payloads[0])["item_id"][1:])
        stream += [(1000 + 4000 * k + 100 + 60 * i, (p, False)) for i, p in enumerate(payloads)]
    stream.sort(key=lambda m: m[0])
    if data.draw(st.booleans(), label="shuffled"):
        stream = data.draw(st.permutations(stream), label="order")
    malformed = 0
    for i, (t_ms, (payload, binary)) in enumerate(stream):
        if payload:
            try:
                ev.parse(payload)
            except ev.ProtocolError:
                malformed += 1
        s._on_message(payload, t_ms * MS, binary)  # what the reader greenlet does: must never raise
        if emit_midway and i % 7 == 6:
            s._emit_ready(final=False)
    s._emit_ready(final=True)  # what _shutdown does
    assert s.malformed == malformed
    assert len(records) == n_turns == s.record.turns_recorded
    assert [r.turn_index for r in records] == list(range(n_turns))
    for r in records:
        assert r.reason in REASONS and r.complete == (r.reason == "complete")
    assert len(s.timeline.session_events) <= session_mod.MAX_SESSION_EVENTS


def test_a_flood_of_garbage_keeps_the_event_log_bounded():
    s, records = _session(1)
    for i in range(3 * session_mod.MAX_SESSION_EVENTS):
        s._on_message(b"\x00garbage" if i % 2 else b'{"type":"x.flood"}', (i + 1) * MS, bool(i % 4 == 1))
    s._emit_ready(final=True)
    assert s.malformed == 3 * session_mod.MAX_SESSION_EVENTS // 2
    assert len(s.timeline.session_events) == session_mod.MAX_SESSION_EVENTS
    assert records[0].reason == "no_speech_detected"


@pytest.mark.parametrize("delta", ["=", "==", "A=", "AA=="])
def test_degenerate_audio_deltas_never_count_negative_bytes(delta):
    """A base64 delta that decodes to nothing (or to garbage padding) must not make audio_bytes negative."""
    s, records = _session(1)
    msgs = [ev.server_event(ev.SPEECH_STARTED, item_id="u1"),
            ev.server_event(ev.RESPONSE_CREATED, response={"id": "r1"}),
            ev.server_event(ev.AUDIO_DELTA, response_id="r1", delta=delta),
            ev.server_event(ev.RESPONSE_DONE, response={"id": "r1", "status": "completed"})]
    for i, m in enumerate(msgs):
        s._on_message(orjson.dumps(m), (1500 + i) * MS, False)
    s._emit_ready(final=True)
    rec = records[0]
    assert rec.audio_bytes >= 0 and (rec.response_audio_ms is None or rec.response_audio_ms >= 0), rec
