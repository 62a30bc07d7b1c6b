"""The simulator's per-connection state machine without sockets: a fake clock executes its actions."""

from __future__ import annotations

import heapq
import itertools
import json

import pytest

from harness import audio, fixtures
from harness.protocol import events as ev
from harness.simulator.actions import Close, Compute, Record, Send, SendRaw, Timer
from harness.simulator.profiles import load_profile
from harness.simulator.reply_bank import ReplyBank
from harness.simulator.session import SessionSetup, SimSession
from harness.simulator.transcribe import Transcriber

MS = 1_000_000
BANK = ReplyBank()
TRANSCRIBER = Transcriber()


class Driver:
    """Runs a SimSession on a fake monotonic clock; records what it sends."""

    def __init__(self, profile="ideal", overrides=None, *, index=0, seed=0, model="gpt-realtime", agent=None,
                 wall_ns=0, api_version="2026-07-15"):
        p = load_profile(profile, overrides)
        self.s = SimSession(SessionSetup(api_version, model, agent, index, seed, p, BANK, TRANSCRIBER), wall_ns)
        self.now = 1_000_000 * MS
        self.heap: list = []
        self.seq = itertools.count()
        self.sent: list[dict] = []
        self.raw: list = []
        self.records: list = []
        self.close: Close | None = None
        self.run(self.s.start(self.now))

    def run(self, actions):
        for a in actions:
            if isinstance(a, Send):
                if self.close is None:
                    if a.truth is not None:
                        a.truth.stamp(a.instant)  # as the server's writer does, on the real clock
                    self.sent.append(json.loads(ev.dumps(a.event)))
            elif isinstance(a, Timer):
                heapq.heappush(self.heap, (a.at_ns, next(self.seq), a.fn))
            elif isinstance(a, Record):
                self.records.append(a.truth if isinstance(a.truth, dict) else a.truth.finish())
            elif isinstance(a, SendRaw):
                self.raw.append(a.data)
            elif isinstance(a, Close):
                self.close = a
            elif isinstance(a, Compute):
                self.run(a.then(a.work(), self.now))

    def advance(self, ms: float):
        end = self.now + int(ms * MS)
        while self.heap and self.heap[0][0] <= end:
            at, _, fn = heapq.heappop(self.heap)
            self.now = max(self.now, at)
            self.run(fn(self.now))
        self.now = end

    def send(self, event, advance_ms: float = 0.0):
        self.run(self.s.receive(json.dumps(event), self.now, self.now))
        self.advance(advance_ms)

    def stream(self, frames, chunk_ms=20):
        for f in frames:
            self.run(self.s.receive(ev.append_message(f), self.now, self.now))
            self.advance(chunk_ms)

    def types(self):
        return [e["type"] for e in self.sent]

    def of(self, etype):
        return [e for e in self.sent if e["type"] == etype]


def frames(fid="car_call_mom", fmt=None, chunk_ms=20):
    return fixtures.frames(fid, fmt or audio.input_format(), chunk_ms)


def silence(ms, fmt=None, chunk_ms=20):
    return fixtures.silence_frames(fmt or audio.input_format(), chunk_ms, count=ms // chunk_ms)


RESPONSE_ORDER = ["response.created", "response.output_item.added", "conversation.item.created",
                  "response.content_part.added"]
DONE_ORDER = ["response.audio.done", "response.audio_transcript.done", "response.content_part.done",
              "response.output_item.done", "response.done"]


def test_session_created_first_and_update_echoes_merged_config():
    d = Driver()
    assert d.types() == ["session.created"]
    d.send({"type": "session.update", "session": {"voice": "coral"}})
    upd = d.sent[-1]
    assert upd["type"] == "session.updated" and upd["session"]["voice"] == "coral"
    assert upd["session"]["id"] == d.sent[0]["session"]["id"]


def test_invalid_update_is_an_error_and_the_old_config_stays():
    d = Driver()
    d.send({"type": "session.update", "event_id": "e1", "session": {"turn_detection": {"type": "server_vad",
                                                                                       "threshold": 2}}})
    err = d.sent[-1]["error"]
    assert d.sent[-1]["type"] == "error" and err["type"] == "invalid_request_error"
    assert err["param"] == "session.turn_detection.threshold" and err["event_id"] == "e1"
    assert d.s.config["turn_detection"]["threshold"] == 0.5 and d.close is None


def test_manual_turn_full_sequence_and_usage():
    d = Driver()
    d.send({"type": "session.update", "session": {"turn_detection": None}})
    d.stream(frames().frames + silence(200))
    assert d.types()[-1] == "session.updated"  # no VAD events in manual mode
    d.send({"type": "input_audio_buffer.commit"})
    assert d.types()[-2:] == ["input_audio_buffer.committed", "conversation.item.created"]
    user_item = d.sent[-1]["item"]
    assert user_item["role"] == "user" and user_item["content"][0]["type"] == "input_audio"
    d.send({"type": "response.create"}, advance_ms=10_000)
    t = d.types()
    start = t.index("response.created")
    assert t[start:start + 4] == RESPONSE_ORDER
    assert t[-5:] == DONE_ORDER
    middle = set(t[start + 4:-5])
    assert middle == {"response.audio.delta", "response.audio_transcript.delta"}
    done = d.sent[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["status"] == "completed"
    assert done["usage"]["output_token_details"]["audio_tokens"] > 0
    assert done["usage"]["input_token_details"]["audio_tokens"] > 0
    transcript = "".join(e["delta"] for e in d.of("response.audio_transcript.delta"))
    assert transcript == d.of("response.audio_transcript.done")[0]["transcript"] == done["output"][0]["content"][0]["transcript"]
    # Every delta decodes to audio in the session's output format; together they are the reply.
    total = sum(ev.base64_decoded_len(e["delta"]) for e in d.of("response.audio.delta"))
    assert abs(total - d.records[0]["audio_sent_ms"] * 48) < 200
    assert d.records[0]["trigger"] == "manual" and d.records[0]["status"] == "completed"


def test_vad_events_match_fixture_bounds_with_padding_and_silence():
    d = Driver()
    lead = 400
    fs = frames("cs_order_status")
    d.stream(silence(lead) + fs.frames + silence(900))
    started, stopped = d.of("input_audio_buffer.speech_started")[0], d.of("input_audio_buffer.speech_stopped")[0]
    pad, sil = 400, 500  # api-version 2026-07-15 defaults
    assert abs(started["audio_start_ms"] - (lead + fs.speech_start_ms - pad)) <= 10
    assert abs(stopped["audio_end_ms"] - (lead + fs.speech_end_ms + sil)) <= 10
    assert started["item_id"] == stopped["item_id"] == d.of("input_audio_buffer.committed")[0]["item_id"]
    assert d.records == [] and d.s.response is not None  # response under way
    d.advance(10_000)
    assert d.records[0]["speech_end_audio_ms"] == pytest.approx(lead + fs.speech_end_ms, abs=10)


def test_response_create_replaces_active_response_or_errors_when_told_not_to():
    d = Driver()
    d.send({"type": "response.create"}, advance_ms=300)
    first = d.of("response.created")[0]["response"]["id"]
    d.send({"type": "response.create", "event_id": "e2", "response": {"cancel_previous": False}})
    assert d.sent[-1]["error"]["code"] == "conversation_already_has_active_response"
    d.send({"type": "response.create"}, advance_ms=10_000)
    dones = d.of("response.done")
    assert dones[0]["response"]["id"] == first and dones[0]["response"]["status"] == "cancelled"
    assert dones[0]["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert dones[1]["response"]["status"] == "completed"
    # nothing of the first response after its response.done
    after = d.sent[d.sent.index(dones[0]) + 1:]
    assert all(e.get("response_id") != first for e in after)


def test_cancel_truncate_and_item_errors():
    d = Driver()
    d.send({"type": "response.cancel", "event_id": "c0"})
    assert d.sent[-1]["error"]["code"] == "response_cancel_not_active" and d.sent[-1]["error"]["event_id"] == "c0"
    d.send({"type": "response.create"}, advance_ms=600)
    item = d.of("response.output_item.added")[0]["item"]["id"]
    d.send({"type": "response.cancel"})
    assert d.sent[-1]["type"] == "response.done" and d.sent[-1]["response"]["status"] == "cancelled"
    sent_ms = d.records[-1]["audio_sent_ms"]
    assert sent_ms > 0
    d.send({"type": "conversation.item.truncate", "item_id": item, "content_index": 0, "audio_end_ms": int(sent_ms) + 500})
    assert d.sent[-1]["type"] == "error" and d.sent[-1]["error"]["param"] == "audio_end_ms"
    d.send({"type": "conversation.item.truncate", "item_id": "item_nope", "content_index": 0, "audio_end_ms": 0})
    assert d.sent[-1]["error"]["param"] == "item_id"
    d.send({"type": "conversation.item.truncate", "item_id": item, "content_index": 0, "audio_end_ms": 100})
    assert d.sent[-1] == {**d.sent[-1], "type": "conversation.item.truncated", "item_id": item, "audio_end_ms": 100}


def test_errors_keep_the_session_open():
    d = Driver()
    d.run(d.s.receive(b"{not json", d.now, d.now))
    assert d.sent[-1]["type"] == "error" and d.sent[-1]["error"]["code"] == "invalid_json"
    d.send({"type": "input_audio_buffer.frobnicate", "event_id": "u1"})
    err = d.sent[-1]["error"]
    assert err["code"] == "invalid_value" and err["param"] == "type" and err["event_id"] == "u1"
    assert "Supported values are" in err["message"]
    d.send({"type": "input_audio_buffer.commit"})
    assert d.sent[-1]["error"]["code"] == "input_audio_buffer_commit_empty"
    d.send({"type": "input_audio_buffer.append", "audio": "***"})
    assert d.sent[-1]["error"]["param"] == "audio"
    d.send({"type": "input_audio_buffer.clear"})
    assert d.sent[-1]["type"] == "input_audio_buffer.cleared" and d.close is None


def test_text_only_modality_streams_text():
    d = Driver()
    d.send({"type": "session.update", "session": {"modalities": ["text"]}})
    d.send({"type": "response.create"}, advance_ms=10_000)
    t = d.types()
    assert "response.audio.delta" not in t and "response.text.delta" in t
    assert t[-4:] == ["response.text.done", "response.content_part.done", "response.output_item.done", "response.done"]
    assert d.of("response.content_part.added")[0]["part"]["type"] == "text"
    text = "".join(e["delta"] for e in d.of("response.text.delta"))
    assert text == d.of("response.text.done")[0]["text"] and text
    assert d.records[0]["first_audio_sent_mono_ns"] is not None  # first text delta marks first output


def test_draws_are_deterministic_per_seed_and_session():
    def run(seed, index):
        d = Driver("realistic", index=index, seed=seed)
        d.send({"type": "response.create"}, advance_ms=20_000)
        r = d.records[0]
        return r["reply_id"], r["injected_delay_ms"], r["audio_pace"]

    assert run(7, 3) == run(7, 3)
    assert len({run(7, i) for i in range(6)}) > 1


@pytest.mark.parametrize("fault", ["error_mid_turn", "stall_response", "disconnect_mid_response", "malformed_frame"])
def test_response_faults(fault):
    d = Driver(overrides={"faults": {fault: 1.0}})
    d.send({"type": "response.create"}, advance_ms=20_000)
    t = d.types()
    assert "response.audio.delta" in t  # the fault strikes mid-response
    if fault == "error_mid_turn":
        err = [e for e in d.sent if e["type"] == "error"][0]["error"]
        assert err["type"] == "server_error"
        done = d.sent[-1]["response"]
        assert done["status"] == "failed" and done["status_details"]["type"] == "failed"
    elif fault == "stall_response":
        assert "response.done" not in t and d.records == []
        d.run(d.s.connection_lost())
        assert d.records[0]["status"] == "stalled" and d.records[0]["fault"] == fault
    elif fault == "disconnect_mid_response":
        assert d.close is not None and d.close.abort and "response.done" not in t
        assert d.records[0]["status"] == "disconnected"
    else:
        assert d.raw and any(isinstance(r, bytes) for r in d.raw) and t[-1] == "response.done"
        assert d.sent[-1]["response"]["status"] == "completed"
    if d.records:
        assert d.records[0]["fault"] == fault


def test_session_time_limit_sends_session_expired_then_closes_1001():
    d = Driver(overrides={"faults": {"session_time_limit_s": 2}})
    d.advance(2100)
    err = d.sent[-1]
    assert err["type"] == "error" and err["error"]["code"] == "session_expired"
    assert "maximum duration" in err["error"]["message"] and d.close.code == 1001


@pytest.mark.parametrize("limit_min", [0.5 / 60, 0.05, 1.51 / 60])
@pytest.mark.parametrize("wall_frac_ms", [0, 100, 900, 999])
def test_the_session_ends_at_the_expires_at_it_announced_never_before_its_limit(limit_min, wall_frac_ms):
    """``expires_at`` is whole unix seconds: a sub-second part of the session limit (or of the creation
    instant) must neither be announced as an earlier expiry than the limit nor enforced at another instant
    than announced (it used to announce floor(now) + int(limit): 0.5 s was announced as already past)."""
    wall = 1_800_000_000 * 1000 * MS + wall_frac_ms * MS
    d = Driver(overrides={"quotas": {"preset": "none", "max_session_minutes": limit_min}}, wall_ns=wall)
    created_mono = d.now
    expires_at = d.sent[0]["session"]["expires_at"]
    assert isinstance(expires_at, int)
    announced_ns = expires_at * 1000 * MS - wall  # after session.created
    assert limit_min * 60e9 <= announced_ns < limit_min * 60e9 + 1000 * MS
    d.advance(announced_ns / MS - 1)
    assert d.close is None and "error" not in d.types()  # not a millisecond early
    d.advance(1)
    assert d.sent[-1]["error"]["code"] == "session_expired" and d.close.code == 1001
    assert d.now - created_mono == announced_ns


def test_without_expires_at_the_session_ends_at_its_limit():
    d = Driver(overrides={"quotas": {"preset": "none", "max_session_minutes": 0.5 / 60}}, wall_ns=900 * MS,
               api_version="2025-10-01")
    assert "expires_at" not in d.sent[0]["session"]
    d.advance(499)
    assert d.close is None
    d.advance(1)
    assert d.close.code == 1001


def test_conversation_items_and_rate_limits_event():
    d = Driver(overrides={"rate_limits_event": True})
    d.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                          "content": [{"type": "input_text", "text": "hi"}]}})
    created = d.sent[-1]
    assert created["type"] == "conversation.item.created" and created["previous_item_id"] is None
    item_id = created["item"]["id"]
    d.send({"type": "conversation.item.retrieve", "item_id": item_id})
    assert d.sent[-1]["type"] == "conversation.item.retrieved" and d.sent[-1]["item"]["id"] == item_id
    d.send({"type": "response.create"}, advance_ms=10_000)
    t = d.types()
    assert t[t.index("response.created") + 1] == "rate_limits.updated"
    assistant = d.of("conversation.item.created")[-1]
    assert assistant["previous_item_id"] == item_id and assistant["item"]["role"] == "assistant"
    d.send({"type": "conversation.item.delete", "item_id": item_id})
    assert d.sent[-1] == {**d.sent[-1], "type": "conversation.item.deleted", "item_id": item_id}
    d.send({"type": "conversation.item.delete", "item_id": item_id})
    assert d.sent[-1]["type"] == "error"


def test_word_error_injection_is_seeded():
    import random

    from harness.simulator.transcribe import inject_errors

    text = " ".join(["word"] * 400)
    a = inject_errors(text, random.Random(3), 0.1)
    assert a == inject_errors(text, random.Random(3), 0.1) != text
    changed = 400 - sum(1 for w in a.split() if w == "word")
    assert 20 < changed < 70
    assert inject_errors("Call Mom.", random.Random(1), 0.0) == "Call Mom."


def test_without_interrupt_response_the_next_turn_waits_for_the_current_response():
    d = Driver(overrides={"audio_pace": 0.5})  # the first reply plays for 4-8 s
    d.send({"type": "session.update", "session": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}})
    d.stream(frames("car_call_mom").frames + silence(600))
    first = d.of("response.created")[0]["response"]["id"]
    d.stream(frames("car_eta").frames + silence(700))
    assert len(d.of("input_audio_buffer.speech_started")) == 2 and len(d.of("input_audio_buffer.committed")) == 2
    assert len(d.of("response.created")) == 1  # still answering the first turn
    d.advance(30_000)
    done1 = next(i for i, e in enumerate(d.sent) if e["type"] == "response.done" and e["response"]["id"] == first)
    created2 = [i for i, e in enumerate(d.sent) if e["type"] == "response.created"][1]
    assert d.sent[done1]["response"]["status"] == "completed" and created2 > done1
    assert [r["status"] for r in d.records] == ["completed", "completed"]
