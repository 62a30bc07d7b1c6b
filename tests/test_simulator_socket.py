"""The simulator over real loopback sockets: VAD timing, ground truth, barge-in, formats, transcription."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from harness import audio, fixtures
from harness.simulator import start_simulator
from harness.simulator.replies import load_replies
from harness.simulator.transcribe import UNRECOGNISED
from harness.simulator.truth import read_truth
from simclient import SimClient

FAST = {"audio_pace": {"dist": "fixed", "value": 8.0}}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.mark.serial  # VAD bounds within 10 ms, first audio within 25 ms: run alone (make test)
def test_vad_events_and_ground_truth_in_real_time(tmp_path):
    """speech_started/stopped land within one VAD frame of the fixture's bounds; truth matches the client."""
    truth = tmp_path / "truth.jsonl"
    over = {"first_audio_anchor": "speech_end", "first_audio_delay_ms": 800, "vad_batch_ms": 20}

    async def main(url):
        c = await SimClient.open(url)
        await c.wait_for("session.created")
        await c.update({"turn_detection": {"type": "server_vad", "silence_duration_ms": 400}})
        lead = 300
        await c.silence(lead)
        fs = await c.say("cs_order_status", silence_ms=1400)
        started = await c.wait_for("input_audio_buffer.speech_started")
        stopped = await c.wait_for("input_audio_buffer.speech_stopped")
        first = await c.wait_for("response.audio.delta")
        first_at = c.arrivals[c.cursor - 1]
        await c.wait_for("response.done", 15)
        await c.close()
        return lead, fs, started, stopped, first_at, c

    with start_simulator("ideal", truth_log=str(truth), overrides=over) as sim:
        lead, fs, started, stopped, first_at, c = run(main(sim.url))
    assert abs(started["audio_start_ms"] - (lead + fs.speech_start_ms - 400)) <= 10
    assert abs(stopped["audio_end_ms"] - (lead + fs.speech_end_ms + 400)) <= 10
    (t,) = read_truth(truth)
    assert t["status"] == "completed" and t["turn_index"] == 0 and t["trigger"] == "vad"
    assert t["speech_end_audio_ms"] == pytest.approx(lead + fs.speech_end_ms, abs=10)
    assert t["item_id"] == started["item_id"] and t["response_id"].startswith("resp_")
    # The injected delay is what the client sees, to within loopback + scheduling noise.
    assert 800 <= t["first_audio_ms_truth"] < 800 + 25, t
    # speech_end_recv is the instant the speech end left the client, give or take loopback delivery.
    sent = c.sent_instant(t["speech_end_audio_ms"])
    assert 0 <= (t["speech_end_recv_mono_ns"] - sent) / 1e6 < 10
    client_first_audio = (first_at - sent) / 1e6
    assert abs(client_first_audio - t["first_audio_ms_truth"]) < 10
    for name in ("speech_stopped_sent", "response_created", "first_audio_sent", "last_audio_sent", "done_sent"):
        assert t[f"{name}_mono_ns"] and t[f"{name}_wall_ns"]
    assert t["speech_end_recv_mono_ns"] < t["speech_stopped_sent_mono_ns"] <= t["response_created_mono_ns"] \
        <= t["first_audio_sent_mono_ns"] <= t["last_audio_sent_mono_ns"] <= t["done_sent_mono_ns"]


def test_barge_in_cancels_with_turn_detected_and_auto_truncates():
    async def main(url):
        c = await SimClient.open(url)
        await c.wait_for("session.created")
        await c.update({"turn_detection": {"type": "server_vad", "silence_duration_ms": 300, "auto_truncate": True}})
        await c.say("car_call_mom", silence_ms=400, speed=4)
        created = await c.wait_for("response.created")
        rid = created["response"]["id"]
        await c.wait_for("response.audio.delta", 5)
        await c.say("car_eta", silence_ms=600, speed=4)  # talk over the agent
        await c.wait_for("input_audio_buffer.speech_started")
        done = await c.wait_for(lambda e: e["type"] == "response.done" and e["response"]["id"] == rid)
        idx = c.events.index(done)
        truncated = await c.wait_for("conversation.item.truncated")
        second = await c.wait_for(lambda e: e["type"] == "response.done" and e["response"]["id"] != rid, 20)
        await c.close()
        return c, done, idx, truncated, second

    with start_simulator("ideal", overrides={"reply_length_ms": {"dist": "fixed", "value": 6000}}) as sim:
        c, done, idx, truncated, second = run(main(sim.url))
    r = done["response"]
    assert r["status"] == "cancelled" and r["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    own = [e["type"] for e in c.events[:idx + 1] if e.get("response_id") == r["id"] or e is done]
    assert own[-5:] == ["response.audio.done", "response.audio_transcript.done", "response.content_part.done",
                        "response.output_item.done", "response.done"]
    after = c.events[idx + 1:]
    assert not [e for e in after if e.get("response_id") == r["id"]]
    assert truncated["item_id"] == r["output"][0]["id"] and truncated["audio_end_ms"] >= 0
    assert second["response"]["status"] == "completed"


def test_manual_mode_commit_then_response_create():
    async def main(url):
        c = await SimClient.open(url)
        await c.wait_for("session.created")
        await c.update({"turn_detection": None, "input_audio_transcription": {"model": "azure-speech"}})
        await c.say("car_eta", silence_ms=200, speed=0)
        await asyncio.sleep(0.3)
        assert "input_audio_buffer.speech_started" not in c.types()
        await c.send({"type": "input_audio_buffer.commit"})
        committed = await c.wait_for("input_audio_buffer.committed")
        tr = await c.wait_for("conversation.item.input_audio_transcription.completed")
        await asyncio.sleep(0.3)
        assert "response.created" not in c.types()
        await c.send({"type": "response.create"})
        await c.wait_for("response.done", 15)
        await c.close()
        return committed, tr

    with start_simulator("ideal", overrides=FAST) as sim:
        committed, tr = run(main(sim.url))
    assert tr["item_id"] == committed["item_id"]
    assert tr["transcript"] == fixtures.get_fixture("car_eta").text


def test_transcription_recognises_fixtures_only():
    reply = load_replies()[0]

    async def main(url):
        c = await SimClient.open(url)
        await c.wait_for("session.created")
        await c.update({"input_audio_transcription": {"model": "azure-speech"},
                        "turn_detection": {"type": "server_vad", "create_response": False}})
        await c.say("cs_double_charge", silence_ms=700, speed=0)
        fixture_text = (await c.wait_for("conversation.item.input_audio_transcription.completed"))["transcript"]
        deltas = "".join(e["delta"] for e in c.of_type("conversation.item.input_audio_transcription.delta"))
        # Real speech that is not a fixture (one of the agent's replies) is not "recognised".
        fmt = audio.input_format()
        data = audio.encode(reply.samples, fmt) + bytes(fmt.bytes_for_ms(700))
        size = fmt.bytes_for_ms(20)
        frames = tuple(base64.b64encode(data[i:i + size]).decode() for i in range(0, len(data), size))
        await c.stream(frames, 20, speed=0)
        other = (await c.wait_for("conversation.item.input_audio_transcription.completed"))["transcript"]
        # Noise never triggers the VAD; commit it by hand to transcribe it.
        await c.update({"turn_detection": None})
        noise = (fixtures.pink_noise(24000, seed=3) * 3000).astype(np.int16)
        nd = audio.encode(noise, fmt)
        await c.stream(tuple(base64.b64encode(nd[i:i + size]).decode() for i in range(0, len(nd), size)), 20, 0)
        await c.send({"type": "input_audio_buffer.commit"})
        noise_text = (await c.wait_for("conversation.item.input_audio_transcription.completed"))["transcript"]
        await c.close()
        return fixture_text, deltas, other, noise_text

    with start_simulator("ideal") as sim:
        fixture_text, deltas, other, noise_text = run(main(sim.url))
    assert fixture_text == deltas == fixtures.get_fixture("cs_double_charge").text
    assert other == UNRECOGNISED and noise_text == UNRECOGNISED


@pytest.mark.parametrize("session, in_fmt, out_fmt", [
    ({"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}, ("g711_ulaw", None), "g711_ulaw"),
    ({"input_audio_format": "g711_alaw", "output_audio_format": "g711_alaw"}, ("g711_alaw", None), "g711_alaw"),
    ({"input_audio_sampling_rate": 16000, "output_audio_format": "pcm16_16000hz"}, ("pcm16", 16000), "pcm16_16000hz"),
    ({"output_audio_format": "pcm16-8000hz"}, ("pcm16", None), "pcm16_8000hz"),
])
def test_input_and_output_formats(session, in_fmt, out_fmt):
    fmt = audio.input_format(*in_fmt)
    ofmt = audio.output_format(out_fmt)

    async def main(url):
        c = await SimClient.open(url)
        await c.wait_for("session.created")
        upd = await c.update({**session, "input_audio_transcription": {"model": "azure-speech"}})
        assert upd["type"] == "session.updated", upd
        fs = await c.say("cs_order_status", fmt, silence_ms=700, speed=0)
        stopped = await c.wait_for("input_audio_buffer.speech_stopped")
        tr = await c.wait_for("conversation.item.input_audio_transcription.completed")
        await c.wait_for("response.done", 15)
        deltas = [base64.b64decode(e["delta"]) for e in c.of_type("response.audio.delta")]
        await c.close()
        return fs, stopped, tr, deltas, upd

    with start_simulator("ideal", overrides=FAST) as sim:
        fs, stopped, tr, deltas, upd = run(main(sim.url))
    assert upd["session"]["output_audio_format"] == session["output_audio_format"]
    assert abs(stopped["audio_end_ms"] - (fs.speech_end_ms + 500)) <= 30
    assert tr["transcript"] == fixtures.get_fixture("cs_order_status").text
    assert len(deltas[0]) == ofmt.bytes_for_ms(100)  # 100 ms deltas in the output format
    total_ms = ofmt.ms_for_bytes(sum(len(d) for d in deltas))
    assert 1000 < total_ms < 10_000
    pcm = audio.decode(b"".join(deltas), ofmt)
    assert np.abs(pcm.astype(np.int32)).max() > 1000  # real speech, not silence


def test_update_errors_keep_the_session_usable():
    async def main(url):
        c = await SimClient.open(url)
        await c.wait_for("session.created")
        bad = await c.update({"turn_detection": {"type": "server_vad", "threshold": 1.5}})
        bad2 = await c.update({"modalities": ["audio"]})
        await c.ws.send("{oops")
        malformed = await c.wait_for("error")
        await c.send({"type": "no.such.event", "event_id": "x9"})
        unknown = await c.wait_for("error")
        good = await c.update({"voice": "coral"})
        await c.send({"type": "response.create"})
        await c.wait_for("response.done", 15)
        await c.close()
        return bad, bad2, malformed, unknown, good

    with start_simulator("ideal", overrides=FAST) as sim:
        bad, bad2, malformed, unknown, good = run(main(sim.url))
    assert bad["type"] == "error" and bad["error"]["param"] == "session.turn_detection.threshold"
    assert bad["error"]["event_id"] == "evt_update" and bad["error"]["type"] == "invalid_request_error"
    assert bad2["error"]["param"] == "session.modalities"
    assert malformed["error"]["code"] == "invalid_json"
    assert unknown["error"]["code"] == "invalid_value" and unknown["error"]["event_id"] == "x9"
    assert good["type"] == "session.updated" and good["session"]["turn_detection"]["threshold"] == 0.5
