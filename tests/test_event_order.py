"""Cascaded vs realtime event order (reference §6a) and the current API surface, over loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from harness.protocol import session as ps
from harness.simulator import start_simulator
from simclient import SimClient

USER_ORDER_CASCADED = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                       "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed",
                       "conversation.item.created", "response.created", "response.output_item.added",
                       "conversation.item.created", "response.content_part.added"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def one_turn(url: str, **open_kw) -> SimClient:
    c = await SimClient.open(url, **open_kw)
    await c.wait_for("session.created")
    await c.say("cs_order_status", silence_ms=900, speed=3)
    await c.wait_for("response.done", 20)
    await asyncio.sleep(0.3)  # a late transcription (realtime order) would land now
    await c.close()
    return c


def _core(types: list[str]) -> list[str]:
    """Event types up to the first audio delta, without deltas of the user's transcription."""
    out = []
    for t in types:
        if t in ("session.created", "session.updated"):
            continue
        out.append(t)
        if t == "response.audio.delta":
            break
    return out


def test_which_models_are_cascaded():
    assert all(ps.is_cascaded(m) for m in ("gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-5", "gpt-5-chat", "phi4-mini"))
    assert not any(ps.is_cascaded(m) for m in ("gpt-realtime", "gpt-realtime-mini", "gpt-4o-realtime-preview",
                                               "phi4-mm-realtime"))
    assert ps.is_cascaded(None, agent=True)


def test_cascaded_models_follow_the_real_cascaded_order():
    with start_simulator("ideal") as sim:
        c = run(one_turn(sim.url, model="gpt-4.1"))
    types = c.types()
    core = _core(types)
    n = len(USER_ORDER_CASCADED)
    assert core[:n] == USER_ORDER_CASCADED, core
    # all of the transcript streams before the first audio delta, no transcription deltas (azure-speech)
    assert set(core[n:-1]) == {"response.audio_transcript.delta"} and len(core) > n + 1, core
    assert "conversation.item.input_audio_transcription.delta" not in types
    assert "response.audio_transcript.delta" not in types[types.index("response.audio.delta"):]
    user_item = c.events[types.index("conversation.item.created")]["item"]
    assert user_item["role"] == "user"
    created = c.of_type("session.created")[0]["session"]
    assert created["agent"] is None and "expires_at" in created


def test_realtime_models_keep_the_realtime_order():
    async def main(url):
        c = await SimClient.open(url, model="gpt-realtime")
        await c.wait_for("session.created")
        await c.update({"input_audio_transcription": {"model": "azure-speech"}})
        await c.say("cs_order_status", silence_ms=900, speed=3)
        await c.wait_for("response.done", 20)
        await asyncio.sleep(0.3)
        await c.close()
        return c

    with start_simulator("ideal") as sim:
        c = run(main(sim.url))
    types = c.types()
    committed = types.index("input_audio_buffer.committed")
    assert types[committed + 1] == "conversation.item.created"  # the user's item right after the commit
    assert "conversation.item.input_audio_transcription.delta" in types
    # interleaved, audio first
    assert types.index("response.audio.delta") < types.index("response.audio_transcript.delta")



ORDER_PROFILE = """
name: order-{order}
seed: 11
# Anchored at the true end of speech (past the VAD decision): the seeded delay is all there is.
first_audio_anchor: speech_end
first_audio_delay_ms: {{dist: lognormal, median: 900, sigma: 0.2, min: 750, max: 2000}}
response_created_delay_ms: {{dist: fixed, value: 40}}
transcription_delay_ms: {{dist: lognormal, median: 200, sigma: 0.5, min: 20, max: 2000}}
chunk_ms: 100
audio_pace: 4.0
reply_length_ms: 1000
vad_batch_ms: 20
event_order: {order}
quotas: none
"""
ORDER_SCENARIO = """
name: order
targets:
  - {{name: cascaded, embedded: true, profile: {cascaded}}}
  - {{name: realtime, embedded: true, profile: {realtime}}}
session:
  turn_detection: {{type: server_vad, silence_duration_ms: 500}}
  input_audio_transcription: {{model: azure-speech}}
conversation:
  - {{fixture: car_call_mom, pause_ms: 300}}
  - {{fixture: car_eta, pause_ms: 300}}
  - {{fixture: car_temperature, pause_ms: 300}}
audio: {{trailing_silence_ms: 300}}
load: {{users: 6, spawn_rate: 20, duration: 60s, sessions_per_user: 1, turn_timeout: 10s, stop_timeout: 10s}}
"""


@pytest.mark.serial  # first audio p50/p95 within 1 ms across two runs: run alone (make test)
def test_harness_first_audio_is_the_same_under_both_orders(tmp_path):
    """Two embedded simulators with the same profile and seed, one in each order, driven side by side by
    one `voiceload run`. The order moves events, never the instants the metrics use: the harness's
    first-audio p50/p95 agree within 1 ms (turns paired by the simulator's session and turn, i.e. the
    same seeded delay) once each simulator's own timer lateness (on this shared machine up to ~10 ms,
    not an effect of the order) is taken out, and in each order the harness equals the truth within 1 ms."""
    profiles = {}
    for order in ("cascaded", "realtime"):
        profiles[order] = tmp_path / f"{order}.yaml"
        profiles[order].write_text(ORDER_PROFILE.format(order=order))
    scenario = tmp_path / "order.yaml"
    scenario.write_text(ORDER_SCENARIO.format(**{k: str(v) for k, v in profiles.items()}))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(scenario), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=120)
    # exit 3 only if this shared machine overloaded the generator (turns flagged invalid, verdict honest);
    # the figures below are still paired with the simulator's truth turn by turn
    verdict = json.loads((out / "run.json").read_text())["verdict"]
    assert proc.returncode == 0 or (proc.returncode == 3 and all("overloaded" in r for r in verdict["reasons"])), \
        (verdict, proc.stderr[-2000:])
    turns = [json.loads(line) for line in (out / "turns.jsonl").read_text().splitlines()]
    assert len(turns) == 18 and all(t["complete"] for t in turns), turns
    # sessions_per_user: 1 means six sessions, not callers replaced until the 60 s duration ends
    assert len((out / "sessions.jsonl").read_text().splitlines()) == 6
    paired: dict[str, dict[tuple[int, int], tuple[float, float]]] = {}
    for order in profiles:
        truth = {t["response_id"]: t for t in (json.loads(x) for x in (out / f"truth-{order}.jsonl").read_text().splitlines())}
        mine = [t for t in turns if t["target"] == order]
        assert len(mine) == 9 and len(truth) == 9
        by_turn = {}
        for t in mine:
            tr = truth[t["response_id"]]
            assert abs(t["first_audio_ms"] - tr["first_audio_ms_truth"]) < 1.0, (t, tr)  # harness == truth
            lateness = tr["first_audio_ms_truth"] - tr["injected_delay_ms"]  # the simulator's timer, not the order
            assert 0 <= lateness < 50
            by_turn[(tr["session_index"], tr["turn_index"])] = (t["first_audio_ms"], t["first_audio_ms"] - lateness)
        paired[order] = by_turn
    assert paired["cascaded"].keys() == paired["realtime"].keys()
    keys = sorted(paired["cascaded"])
    raw = {o: np.array([paired[o][k][0] for k in keys]) for o in paired}
    net = {o: np.array([paired[o][k][1] for k in keys]) for o in paired}
    pct = {o: (np.percentile(raw[o], 50), np.percentile(raw[o], 95), np.percentile(net[o], 50),
               np.percentile(net[o], 95)) for o in paired}
    c, r = pct["cascaded"], pct["realtime"]
    print(f"\nfirst_audio_ms p50/p95 cascaded {c[0]:.2f}/{c[1]:.2f} realtime {r[0]:.2f}/{r[1]:.2f} "
          f"(diff {c[0] - r[0]:+.2f}/{c[1] - r[1]:+.2f}); without the simulators' timer lateness: cascaded "
          f"{c[2]:.2f}/{c[3]:.2f} realtime {r[2]:.2f}/{r[3]:.2f} (diff {c[2] - r[2]:+.2f}/{c[3] - r[3]:+.2f}); "
          f"per-turn max |diff| {np.abs(net['cascaded'] - net['realtime']).max():.3f}")
    # p50/p95 within 1 ms; single turns within 2 ms (each carries up to ~1 ms of stamping noise from a
    # process preempted between its stamp and its send on a busy machine: typically 0.05-0.2 ms)
    assert abs(c[2] - r[2]) <= 1.0 and abs(c[3] - r[3]) <= 1.0
    assert np.abs(net["cascaded"] - net["realtime"]).max() <= 2.0


class TimedDriver:
    """The sans-I/O session on a fake clock (test_simulator_session.Driver), stamping each event it sends;
    ``hold_compute`` keeps recognition results back until ``finish_compute``."""

    def __init__(self, overrides, model="gpt-4.1", hold_compute=False):
        from test_simulator_session import Driver

        self.held = []
        outer = self

        class D(Driver):
            def run(self, actions):
                from harness.simulator.actions import Compute, Send

                for a in actions:
                    if isinstance(a, Compute) and hold_compute:
                        outer.held.append(a)
                        continue
                    before = len(self.sent)
                    super().run([a])
                    if isinstance(a, Send) and len(self.sent) > before:
                        self.sent[-1]["_t"] = self.now

        self.d = D("ideal", overrides, model=model)

    def finish_compute(self):
        for a in self.held:
            self.d.run(a.then(a.work(), self.d.now))
        self.held = []

    def speak(self):
        from test_simulator_session import frames, silence

        self.d.stream(frames().frames + silence(700))

    def t(self, etype, n=0):
        return [e["_t"] for e in self.d.sent if e["type"] == etype][n]


def test_cascaded_holds_the_user_item_to_the_response_instant_and_never_moves_first_audio():
    over = {"transcription_delay_ms": 400, "response_created_delay_ms": 30, "first_audio_delay_ms": 250}
    runs = {}
    for order in ("cascaded", "realtime"):
        r = TimedDriver({**over, "event_order": order})
        r.speak()
        r.d.advance(3000)
        runs[order] = r
    c, rt = runs["cascaded"], runs["realtime"]
    # realtime: transcription 400 ms after the commit; cascaded: capped at response.created (30 ms)
    assert rt.t("conversation.item.input_audio_transcription.completed") - rt.t("input_audio_buffer.committed") \
        == 400 * 1_000_000
    assert c.t("conversation.item.input_audio_transcription.completed") == c.t("response.created") \
        == c.t("input_audio_buffer.committed") + 30 * 1_000_000
    # the response's instants are the same in both orders (same seed, same audio)
    for etype in ("response.created", "response.audio.delta", "response.done"):
        assert c.t(etype) == rt.t(etype), etype
    assert [e["delta"] for e in c.d.of("response.audio.delta")] == [e["delta"] for e in rt.d.of("response.audio.delta")]


def test_cascaded_response_waits_for_a_slow_recognition_then_follows_at_once():
    r = TimedDriver({"transcription_delay_ms": 400, "response_created_delay_ms": 30, "first_audio_delay_ms": 250},
                    hold_compute=True)
    from test_simulator_session import frames, silence

    r.d.stream(frames().frames + silence(560))  # just enough trailing silence for the VAD to commit
    committed = r.t("input_audio_buffer.committed")
    r.d.advance((committed + 100 * 1_000_000 - r.d.now) / 1_000_000)
    # response.created was due 30 ms after the commit: held, recognition still running
    assert "response.created" not in r.d.types() and "conversation.item.created" not in r.d.types()
    r.finish_compute()  # recognition done (70 ms late): transcript, user item, response - now, not at 400 ms
    types = r.d.types()
    i = types.index("conversation.item.input_audio_transcription.completed")
    assert types[i:i + 3] == ["conversation.item.input_audio_transcription.completed", "conversation.item.created",
                              "response.created"]
    assert r.t("response.created") == r.t("conversation.item.input_audio_transcription.completed")
    assert r.t("response.created") - r.t("input_audio_buffer.committed") < 150 * 1_000_000  # not the 400 ms draw
    r.d.advance(3000)
    assert r.d.of("response.done")[0]["response"]["status"] == "completed"
