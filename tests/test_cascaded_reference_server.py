"""The harness against a small loopback server that plays the real cascaded order from the reference
(shared/voicelive-protocol.md §6a, Learn's quickstart log) - not the simulator, so the simulator is
not the only witness that the harness measures a cascaded agent right.

The server scripts one turn, stamps its own sends on the wall clock (same process, same clock as the
caller), and the caller's turn record must agree with those stamps whatever the order.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from pathlib import Path

import gevent
import gevent.event
import orjson

import faultserver as fs
from harness.client.session import CallerSession, Endpoint, SessionOptions
from harness.protocol import events as ev
from harness.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
TRANSCRIPT = "Call Mom."
REPLY = ["Calling", " Mom", " now."]
GAP_S = 0.25  # speech stopped -> first audio delta, as the script plays it


class TurnConn(fs.Conn):
    """Also notices the end of the caller's utterance: the first all-silent append after speech."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.ended = gevent.event.Event()

    def _on_frame(self, frame) -> None:
        if self.speech.is_set() and not self.ended.is_set() and b'"input_audio_buffer.append"' in frame.data:
            if not any(base64.b64decode(orjson.loads(frame.data)["audio"])):
                self.ended.set()
        super()._on_frame(frame)


def script(order: str, stamps: dict):
    """One turn in ``order`` (cascaded: reference §6a; realtime: OpenAI's), stamping key sends."""

    def play(c: TurnConn) -> None:
        c.open_session()
        c.wait_speech(settle=0.0)
        c.send(ev.server_event(ev.SPEECH_STARTED, item_id="item_u1", audio_start_ms=0))
        c.ended.wait(10)
        user = ev.message_item("item_u1", "user", [{"type": "input_audio", "transcript": None}])
        asst = ev.message_item("item_a1", "assistant", [], status="in_progress")
        ids = dict(response_id="resp_1", item_id="item_a1", output_index=0, content_index=0)
        c.send(ev.server_event(ev.SPEECH_STOPPED, item_id="item_u1", audio_end_ms=1500))
        stamps["stopped"] = time.time()
        c.send(ev.server_event(ev.COMMITTED, item_id="item_u1", previous_item_id=None))
        completed = ev.server_event(ev.TRANSCRIPTION_COMPLETED, item_id="item_u1", content_index=0,
                                    transcript=TRANSCRIPT)
        if order == "cascaded":  # transcription completed before the user's item, no transcription deltas
            c.send(completed)
            stamps["transcript"] = time.time()
        c.send(ev.server_event(ev.ITEM_CREATED, previous_item_id=None, item=user))
        c.send(ev.server_event(ev.RESPONSE_CREATED, response=ev.response_object("resp_1")))
        c.send(ev.server_event(ev.OUTPUT_ITEM_ADDED, response_id="resp_1", output_index=0, item=asst))
        c.send(ev.server_event(ev.ITEM_CREATED, previous_item_id="item_u1", item=asst))
        c.send(ev.server_event(ev.CONTENT_PART_ADDED, **ids, part={"type": "audio", "transcript": ""}))
        if order == "cascaded":  # the whole transcript before the first audio delta
            for d in REPLY:
                c.send(ev.server_event(ev.AUDIO_TRANSCRIPT_DELTA, **ids, delta=d))
        gevent.sleep(max(0.0, stamps["stopped"] + GAP_S - time.time()))
        for i, d in enumerate(REPLY):
            if i == 0:
                stamps["first_audio"] = time.time()
            c.send(ev.server_event(ev.AUDIO_DELTA, **ids, delta=fs.AUDIO_100MS))
            if order == "realtime":
                c.send(ev.server_event(ev.AUDIO_TRANSCRIPT_DELTA, **ids, delta=d))
                if i == 0:  # the transcription lands mid-response
                    stamps["transcript"] = time.time()
                    c.send(ev.server_event(ev.TRANSCRIPTION_DELTA, item_id="item_u1", content_index=0, delta="Call"))
                    c.send(completed)
            gevent.sleep(0.05)
        text = "".join(REPLY)
        c.send(ev.server_event(ev.AUDIO_DONE, **ids))
        c.send(ev.server_event(ev.AUDIO_TRANSCRIPT_DONE, **ids, transcript=text))
        c.send(ev.server_event(ev.CONTENT_PART_DONE, **ids, part={"type": "audio", "transcript": text}))
        done_item = ev.message_item("item_a1", "assistant", [{"type": "audio", "transcript": text}])
        c.send(ev.server_event(ev.OUTPUT_ITEM_DONE, response_id="resp_1", output_index=0, item=done_item))
        c.send(ev.server_event(ev.RESPONSE_DONE, response=ev.response_object("resp_1", status="completed",
                                                                             output=[done_item])))

    return play


def _scenario():
    sc = load_scenario(ROOT / "scenarios" / "smoke.yaml")
    turn = dataclasses.replace(sc.conversation[0], fixture="car_call_mom", pause_ms=100, expect=dataclasses.replace(
        sc.conversation[0].expect, transcript_contains=["mom"], max_first_audio_ms=None))
    return dataclasses.replace(sc, conversation=[turn], audio=dataclasses.replace(sc.audio, trailing_silence_ms=600),
                               load=dataclasses.replace(sc.load, turn_timeout_s=8.0))


def run_turn(order: str):
    stamps: dict = {}
    with fs.ScriptServer(script(order, stamps), conn_class=TurnConn) as srv:
        endpoint = Endpoint(name=order, url=lambda: srv.url, headers=dict, display=srv.url, open_timeout_s=5.0)
        s = CallerSession(_scenario(), endpoint, SessionOptions(session_id=order))
        s.run()
    assert not srv.errors, srv.errors
    (rec,) = s.records
    return rec, stamps


def test_harness_measures_the_reference_cascaded_order_like_the_realtime_one():
    recs = {}
    for order in ("cascaded", "realtime"):
        rec, st = run_turn(order)
        assert rec.complete and rec.reason == "complete" and rec.expectations_ok, rec
        assert rec.input_transcript == TRANSCRIPT and rec.response_transcript == "".join(REPLY)
        assert rec.response_audio_ms == 300.0
        # the caller's figures are the server's own send stamps (same clock), whatever the order
        assert abs(rec.first_audio_ms - (st["first_audio"] - rec.t_speech_end) * 1000) < 2.0, (order, rec, st)
        assert abs(rec.server_response_ms - (st["first_audio"] - st["stopped"]) * 1000) < 2.0, (order, rec, st)
        assert abs(rec.first_transcript_ms - (st["transcript"] - rec.t_speech_end) * 1000) < 2.0, (order, rec, st)
        recs[order] = rec
    # the cascaded transcript comes before the audio, the realtime one after it
    assert recs["cascaded"].first_transcript_ms < recs["cascaded"].first_audio_ms
    assert recs["realtime"].first_transcript_ms >= recs["realtime"].first_audio_ms - 2.0
