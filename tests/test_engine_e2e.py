"""The engine against the simulator through real loopback sockets: records, accuracy, barge-in, faults."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import gevent
import pytest

from harness.accuracy import compare
from harness.client.endpoints import embedded_endpoint
from harness.client.runner import LoadRunner
from harness.client.session import CallerSession, SessionOptions
from harness.records import read_records
from harness.scenario import load_scenario
from harness.shapes import make_plan
from harness.simulator import SimulatorProcess

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


def scenario(name: str, turns: int | None = None, **load):
    sc = load_scenario(ROOT / "scenarios" / f"{name}.yaml")
    if turns is not None:
        sc = dataclasses.replace(sc, conversation=sc.conversation[:turns])
    if load:
        sc = dataclasses.replace(sc, load=dataclasses.replace(sc.load, **load))
    return sc


def run_one(sc, sim, session_id="t"):
    s = CallerSession(sc, embedded_endpoint("embedded", sim.url), SessionOptions(session_id=session_id))
    rec = s.run()
    return rec, s.records


@pytest.mark.serial  # first audio within 1 ms of ground truth: run alone (make test)
def test_smoke_session_yields_complete_records_that_match_ground_truth(tmp_path):
    sc = scenario("smoke", turns=2)
    truth = tmp_path / "truth.jsonl"
    with SimulatorProcess(profile="ideal", truth_log=str(truth)) as sim:
        srec, records = run_one(sc, sim)
    assert srec.outcome == "ok" and srec.turns_attempted == srec.turns_recorded == 2
    assert srec.server_session_id.startswith("sess_") and srec.close_code == 1000
    for rec, fixture in zip(records, ("cs_order_status", "cs_double_charge")):
        assert rec.complete and rec.reason == "complete" and rec.fixture == fixture
        # ideal profile: first audio 200 ms after the VAD decision, which needs 500 ms of silence
        assert 650 <= rec.first_audio_ms <= 900, rec
        assert 480 <= rec.vad_ms <= 700
        assert rec.leading_silence_ms > 0 and rec.first_voiced_ms > rec.first_audio_ms
        assert rec.response_audio_ms > 1000 and rec.audio_rtf > 1.5
        assert rec.wer == 0.0 and rec.expectations_ok
        assert rec.marks["speech_stopped"] == pytest.approx(rec.vad_ms)
    cmp = compare([r.to_dict() for r in records], read_records(truth))
    assert len(cmp) == 2
    # Both ends stamp with the kernel's arrival instants (harness/kstamp.py): what is left is loopback
    # delivery and the few µs between each side's send stamp and its send() call.
    assert all(abs(c.error_ms) < 1.0 for c in cmp), cmp


@pytest.mark.serial  # turns within 1/2 ms of truth; neighbours starve it (invalid turns): run alone (make test)
def test_accuracy_at_20_concurrent_sessions(tmp_path):
    sc = scenario("smoke", turns=2, users=20, spawn_rate=20, duration_s=6, stop_timeout_s=40,
                  think_time_s=(0.0, 0.0), sessions_per_user=1)
    truth = tmp_path / "truth.jsonl"
    turns, sessions = [], []
    with SimulatorProcess(profile="ideal", truth_log=str(truth)) as sim:
        runner = LoadRunner(sc, [embedded_endpoint("embedded", sim.url)], make_plan(sc.load, drain_s=0.0),
                            on_turn=turns.append, on_session=sessions.append, progress=None)
        runner.run()
    assert len(sessions) == 20 and all(s.outcome == "ok" for s in sessions)
    assert len(turns) == 40 and all(t.complete for t in turns)
    cmp = compare([t.to_dict() for t in turns if t.valid], read_records(truth))
    # Turns streamed while this shared machine starved the generator are flagged invalid, not trusted.
    assert len(cmp) >= 20, [t.generator_lag_ms for t in turns]
    errors = sorted(abs(c.error_ms) for c in cmp)
    # Kernel arrival stamps at both ends take both processes' scheduling delay out of the measurement
    # (measured here: max 0.10 ms; with user-space stamps the median was ~1 ms and p95 up to 15 ms).
    assert statistics.median(errors) < 1.0 and errors[int(0.95 * len(errors))] < 2.0, errors
    assert runner.stamp_delays.n > 0  # the kernel stamps were really in use


def test_barge_in_cancels_and_measures_cancel_time():
    sc = scenario("barge_in", turns=2)
    with SimulatorProcess(profile="ideal") as sim:
        srec, (interrupted, barge) = run_one(sc, sim)
    assert interrupted.reason == "cancelled" and interrupted.response_status == "cancelled"
    assert interrupted.expectations_ok  # the scenario expects this turn to be cancelled
    assert barge.kind == "barge_in" and barge.reason == "complete"
    assert barge.cancel_ms is not None and 0 < barge.cancel_ms < 1500, barge
    assert barge.input_transcript and "person" in barge.input_transcript.lower() and barge.expectations_ok


def test_manual_commit_turns():
    sc = scenario("language_tutor", turns=2)
    with SimulatorProcess(profile="ideal") as sim:
        srec, records = run_one(sc, sim)
    assert [r.kind for r in records] == ["manual", "manual"]
    assert all(r.complete for r in records), records
    assert all(r.vad_ms is None for r in records)  # no server VAD in push-to-talk
    assert all(r.first_audio_ms is not None and r.first_audio_ms > 0 for r in records)


def test_text_only_and_other_audio_formats():
    base = scenario("smoke", turns=1)
    variants = {
        "text": {**base.session, "modalities": ["text"]},
        "ulaw": {**base.session, "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"},
        "16k": {**base.session, "input_audio_sampling_rate": 16000, "output_audio_format": "pcm16_16000hz"},
    }
    results = {}
    with SimulatorProcess(profile="ideal") as sim:
        def go(name, session):
            results[name] = run_one(dataclasses.replace(base, session=session), sim, name)[1]
        gevent.joinall([gevent.spawn(go, n, s) for n, s in variants.items()], raise_error=True)
    assert results["text"][0].complete and results["text"][0].audio_bytes == 0
    assert results["text"][0].response_transcript
    for name in ("ulaw", "16k"):
        rec = results[name][0]
        assert rec.complete and 500 < rec.first_audio_ms < 1200, (name, rec)
        assert rec.input_transcript == "Hi, I'd like to check the status of my order.", (name, rec)


FAULTS = {
    # fault override -> (expected session outcome, expected first-turn reason or None if no turn ran)
    "error_mid_turn": ("ok", "failed"),
    "disconnect_mid_response": ("disconnected", "disconnected"),
    "stall_response": ("ok", "timeout"),
    "handshake_429": ("rejected", None),
    "handshake_503": ("rejected", None),
    "malformed_frame": ("ok", "complete"),
    "slow_handshake": ("ok", "complete"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_is_classified_and_counts_reconcile(fault):
    sc = scenario("smoke", turns=1, turn_timeout_s=4.0)
    overrides = {"faults": {fault: 1.0, "retry_after_s": 0.2, "slow_handshake_ms": 600}}
    with SimulatorProcess(profile="ideal", overrides=overrides) as sim:
        srec, records = run_one(sc, sim)
    outcome, reason = FAULTS[fault]
    assert srec.outcome == outcome, srec
    assert srec.turns_attempted == srec.turns_recorded == len(records)
    if reason is None:
        assert records == [] and srec.http_status in (429, 503)
        assert srec.connect_attempts == 4 and srec.backoff_ms >= 3 * 200 - 1  # Retry-After honoured each time
    else:
        assert records[0].reason == reason, records[0]
    if fault == "slow_handshake":
        assert srec.connect_ms >= 550


def test_session_time_limit_closes_with_1001():
    """The server ends the session at its time limit (error session_expired, close 1001): the caller
    reconnects and goes on with the conversation (issue 12); a turn the limit cut is session_expired."""
    sc = scenario("smoke", turns=3, turn_timeout_s=4.0)
    with SimulatorProcess(profile="ideal", overrides={"faults": {"session_time_limit_s": 4.0}}) as sim:
        srec, records = run_one(sc, sim)
    assert srec.reconnects >= 1 and len(srec.reconnect_gap_ms) == srec.reconnects
    assert srec.turns_attempted == srec.turns_recorded == 3
    assert all(r.complete or r.throttle == "session_expired" for r in records), [(r.reason, r.error) for r in records]
    if srec.outcome != "ok":  # the last connection expired too, after the last turn began
        assert srec.outcome == "disconnected" and srec.close_code == 1001


def test_sampled_session_recording_places_both_voices_on_the_real_timeline(tmp_path):
    import numpy as np
    import soundfile as sf

    sc = scenario("smoke", turns=1)
    sc = dataclasses.replace(sc, audio=dataclasses.replace(sc.audio, record_fraction=1.0))
    with SimulatorProcess(profile="ideal") as sim:
        s = CallerSession(sc, embedded_endpoint("embedded", sim.url),
                          SessionOptions(session_id="rec1", recording_dir=str(tmp_path)))
        s.run()
    rec = s.records[0]
    data, rate = sf.read(str(tmp_path / "rec1.wav"), dtype="int16")
    assert rate == 24000 and data.ndim == 2 and data.shape[1] == 2

    def first_loud(x, after=0):
        frames = np.abs(x[after:].astype(np.int32)).reshape(-1, 120)[:, :].max(axis=1)  # 5 ms windows
        return after + int(np.argmax(frames > 1000)) * 120

    mic_start = s.timeline.turns[0].utterance_start_ns
    t0 = s.recorder.t0
    speech_end = (s.timeline.turns[0].speech_end_ns - t0) * 24000 / 1e9
    agent_on = first_loud(data[: len(data) // 120 * 120, 1])
    # The agent's first audible sample sits first_voiced_ms after the caller's true end of speech.
    assert abs((agent_on - speech_end) / 24 - rec.first_voiced_ms) < 15, (agent_on, speech_end, rec)
    caller_on = first_loud(data[: len(data) // 120 * 120, 0])
    expected_caller = (mic_start - t0) * 24000 / 1e9 + 24 * 430  # cs_order_status speech starts at 430 ms
    assert abs(caller_on - expected_caller) / 24 < 120
