"""The cross-session VAD (harness.vad.feed_many, simulator vad_pass.py) decides exactly as each session alone."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from harness import audio, fixtures
from harness.fixtures import load_manifest
from harness.protocol import events as ev
from harness.simulator.actions import Compute, Send, Timer
from harness.simulator.profiles import load_profile
from harness.simulator.reply_bank import ReplyBank
from harness.simulator.session import SessionSetup, SimSession
from harness.simulator.transcribe import Transcriber
from harness.simulator.vad_pass import VadPass
from harness.vad import StreamingVad, VadParams, feed_many

FIXTURES = ("cs_double_charge", "car_eta_noisy10" if "car_eta_noisy10" in load_manifest() else "car_eta",
            "tutor_en_restaurant", "cs_order_status_noisy10", "car_temperature", "tutor_es_greeting")


def _state(v: StreamingVad) -> str:
    return repr((v.last_probability, v._floor, v._peak, v._spread, v._credit, v._pos, v._gap, v._run,
                 v._cand_start, v._cand_speech, v._last_end, v.speaking, v._recent, v._lin))


def _ev(e) -> tuple:
    return (e.kind, e.audio_ms, e.speech_ms, e.decided_at_ms)


@pytest.mark.parametrize("seed", [1, 2])
def test_feed_many_equals_feed_per_detector(seed: int) -> None:
    """Several detectors (three sample rates, different params) fed different fixtures in different chunk
    sizes, grouped at random into stacked passes: every event and every float of state is the same."""
    rng = random.Random(seed)
    man = load_manifest()
    streams = []
    for i, fid in enumerate(FIXTURES):
        rate = (24000, 16000, 8000)[i % 3]
        x = audio.resample(man[fid].samples(), 24000, rate) if rate != 24000 else man[fid].samples()
        x = np.concatenate([np.asarray(x, np.int16), np.zeros(rate, np.int16)])
        params = VadParams() if i % 2 else VadParams(threshold=0.4, silence_duration_ms=300, speech_duration_ms=100)
        streams.append((x, rate, params))
    alone = [StreamingVad(rate, params) for _, rate, params in streams]
    stacked = [StreamingVad(rate, params) for _, rate, params in streams]
    pos = [0] * len(streams)
    events_alone: list[list] = [[] for _ in streams]
    events_stacked: list[list] = [[] for _ in streams]
    passes = 0
    while any(p < len(s[0]) for p, s in zip(pos, streams)):
        group = [i for i in range(len(streams)) if pos[i] < len(streams[i][0]) and rng.random() < 0.7]
        taken = []
        for i in group:
            x, rate = streams[i][0], streams[i][1]
            k = rate * rng.choice([10, 20, 60, 100, 170]) // 1000 + rng.choice([0, 0, 7])
            chunk = x[pos[i] : pos[i] + k]
            pos[i] += k
            events_alone[i] += alone[i].feed(chunk)
            taken.append((stacked[i], stacked[i].take(chunk)))
        for i, evs in zip(group, feed_many(taken)):
            events_stacked[i] += evs
        passes += 1
        for i in group:
            v = stacked[i]
            assert _state(alone[i]) == _state(v), (FIXTURES[i], passes)
            # the stationarity window's extremes, kept incrementally, are its max and min
            assert not v._recent or (v._recent_hi, v._recent_lo) == (max(v._recent), min(v._recent))
    assert [[_ev(e) for e in es] for es in events_alone] == [[_ev(e) for e in es] for es in events_stacked]
    assert all(any(e.kind == "stopped" for e in es) for es in events_alone)  # every stream had speech


def test_rows_do_not_depend_on_the_stack() -> None:
    """One session's windows give the same features alone as inside any stack (FFT and reductions row-wise)."""
    from harness.vad import _SPECTRAL, StreamingVad as SV

    SV(24000)
    sp = _SPECTRAL[24000]
    x = np.asarray(load_manifest()["cs_double_charge"].samples(), np.float32)
    rows = len(x) // 240 - 1
    x = x[: (rows + 1) * 240]
    full = sp.features(x)
    assert len(full) == rows > 200
    for k in (1, 3, 10, 64, 129):
        parts = []
        for i in range(0, rows, k):
            parts += sp.features(x[i * 240 : (min(i + k, rows) + 1) * 240])
        assert parts == full, k


# --- sessions ---------------------------------------------------------------------------------------

def _session(index: int, defer: bool, batch_ms: int) -> SimSession:
    p = load_profile("ideal", {"vad_batch_ms": batch_ms})
    s = SimSession(SessionSetup("2026-07-15", "gpt-realtime", None, index, 1, p, ReplyBank(), Transcriber(),
                                defer_vad=defer), 0)
    s.start(0)
    s.receive(json.dumps(ev.session_update({"turn_detection": {"type": "server_vad"},
                                            "input_audio_transcription": {"model": "whisper-1"}})).encode(), 0, 0)
    return s


class _Link:
    def __init__(self, session: SimSession) -> None:
        self.session, self.closed, self.sent = session, False, []

    def dispatch(self, actions) -> None:
        self.sent += _visible(actions)


def _visible(actions) -> list[tuple]:
    """What a client sees of the actions, minus random ids, plus the ground truth of speech_stopped."""
    out = []
    for a in actions:
        if isinstance(a, Send):
            e, t = a.event, a.truth
            out.append((e["type"], e.get("audio_start_ms"), e.get("audio_end_ms")) + (() if t is None else (
                t.speech_start_audio_ms, t.speech_end_audio_ms, t.speech_end_recv_mono_ns, t.speech_end_recv_shared)))
        elif isinstance(a, Timer):  # when the response's events are due: anchored at the deciding append
            out.append(("timer", a.at_ns))
        elif isinstance(a, Compute):  # transcription of the kept audio
            out.append(("transcript", a.work()))
    return out


def test_sessions_decide_the_same_in_the_loop_pass() -> None:
    """Six sessions with different fixtures, chunk sizes and VAD batches: through VadPass (decided together
    once per tick) each sees exactly the events and speech-end truth it sees deciding on its own, in the
    same order - also when another message reaches a session whose batch is still due (it catches up
    first) and when one read brings several appends (batches queue up, each decided as of its own append)."""
    fmt = audio.input_format("pcm16", 24000)
    chunks_ms = (20, 40, 20, 100, 60, 20)
    batches_ms = (100, 60, 20, 100, 100, 60)
    streams = []
    for i, fid in enumerate(FIXTURES):
        fs = fixtures.frames(fid, fmt, chunks_ms[i]).frames
        tail = fixtures.silence_frames(fmt, chunks_ms[i], -60.0, seed=i, count=1500 // chunks_ms[i])
        msgs = [ev.append_message(f) for f in (fs + tail) * 2]
        streams.append(msgs[i * 3 :])  # start at different points of the talk cycle
    update = json.dumps(ev.session_update({"instructions": "be brief"})).encode()
    alone = [_session(i, False, batches_ms[i]) for i in range(len(FIXTURES))]
    deferred = [_session(i, True, batches_ms[i]) for i in range(len(FIXTURES))]
    links = [_Link(s) for s in deferred]
    scheduled: list = []
    vp = VadPass(scheduled.append)
    seen_alone: list[list] = [[] for _ in FIXTURES]
    catch_ups = 0
    # Sessions 0 and 3 get bursts: some reads carry 2-7 appends (one kernel stamp for all of them).
    reads = []
    for i, msgs in enumerate(streams):
        rng, k, rs = random.Random(i), 0, []
        while k < len(msgs):
            n = rng.choice([1, 1, 1, 2, 3, 7]) if i in (0, 3) else 1
            rs.append(msgs[k : k + n])
            k += n
        reads.append(rs)
    bursts = 0
    for t in range(max(len(r) for r in reads)):
        now = (t + 1) * 20_000_000
        for i, rs in enumerate(reads):
            if t >= len(rs):
                continue
            for m in rs[t]:
                bursts += deferred[i].input.due
                seen_alone[i] += _visible(alone[i].receive(m, now, now))
                links[i].sent += _visible(deferred[i].receive(m, now, now))
            if deferred[i].input.due and i in (1, 4):  # a second message in the same read: it catches up first
                catch_ups += 1
                seen_alone[i] += _visible(alone[i].receive(update, now, now))
                links[i].sent += _visible(deferred[i].receive(update, now, now))
            if deferred[i].input.due:
                vp.add(links[i])
        assert len(scheduled) <= 1  # one pass per tick, however many sessions fell due
        while scheduled:
            scheduled.pop()()
    for i in range(len(FIXTURES)):
        assert links[i].sent == seen_alone[i], FIXTURES[i]
        kinds = [k for k, *_ in seen_alone[i]]
        assert kinds.count(ev.SPEECH_STOPPED) >= 2, FIXTURES[i]
    assert catch_ups > 0 and bursts > 0  # both paths were exercised
    assert any(t[-1] for i in (0, 3) for t in seen_alone[i] if t[0] == ev.SPEECH_STOPPED)  # a shared-read stamp


# --- over real sockets -----------------------------------------------------------------------------

def test_concurrent_sessions_over_sockets_get_their_own_decisions(monkeypatch) -> None:
    """Six clients streaming different fixtures (20/40 ms chunks) tick by tick, as a load generator does,
    so several sessions' batches fall due in one loop pass and are decided together: each gets exactly
    the speech_started/stopped positions its audio gets from a per-session InputAudio."""
    import asyncio

    import harness.simulator.vad_pass as vp
    from harness.simulator import start_simulator
    from harness.simulator.vad_stream import InputAudio, vad_params
    from simclient import SimClient

    fmt = audio.input_format()
    chunks_ms = [(20, 40)[i % 2] for i in range(len(FIXTURES))]
    streams = [fixtures.frames(fid, fmt, ms).frames + fixtures.silence_frames(fmt, ms, count=1200 // ms)
               for fid, ms in zip(FIXTURES, chunks_ms)]
    vad_types = (ev.SPEECH_STARTED, ev.SPEECH_STOPPED)

    def expected(frames: tuple[str, ...], td: dict) -> list[tuple]:
        buf = InputAudio(fmt, vad_params(td), 100)
        out = []
        for k, b64 in enumerate(frames):
            out += buf.append(b64, k, k)
        return [(ev.SPEECH_STARTED if e.kind == "started" else ev.SPEECH_STOPPED, e.audio_ms) for e in out]

    async def main(url: str):
        clients = [await SimClient.open(url) for _ in FIXTURES]
        wants = []
        for c, frames in zip(clients, streams):
            await c.wait_for("session.created")
            updated = await c.update({"turn_detection": {"type": "server_vad"}})
            wants.append(expected(frames, updated["session"]["turn_detection"]))
        for t in range(max(map(len, streams))):  # one frame per client per tick, back to back
            for c, frames in zip(clients, streams):
                if t < len(frames):
                    await c.ws.send(ev.append_message(frames[t]).decode())
            await asyncio.sleep(0.004)
        gots = []
        for c, want in zip(clients, wants):
            for _ in range(sum(k == ev.SPEECH_STOPPED for k, _ in want)):
                await c.wait_for(ev.SPEECH_STOPPED, 15)
            gots.append([(e["type"], e.get("audio_start_ms", e.get("audio_end_ms")))
                         for e in c.events if e["type"] in vad_types])
            await c.close()
        return gots, wants

    stacked = {"passes": 0, "decisions": 0}

    def counting(taken):  # the simulator runs in a thread of this process: count multi-session passes
        out = feed_many(taken)
        if sum(f is not None for _, f in taken) > 1:
            stacked["passes"] += 1
            stacked["decisions"] += sum(map(len, out))
        return out

    monkeypatch.setattr(vp, "feed_many", counting)
    with start_simulator("ideal", overrides={"vad_batch_ms": 100}) as sim:
        gots, wants = asyncio.run(asyncio.wait_for(main(sim.url), 60))
    for fid, got, want in zip(FIXTURES, gots, wants):
        assert want and got == want, fid
    assert stacked["passes"] > 0 and stacked["decisions"] > 0, stacked  # decisions did come from stacked passes


# --- base64 -----------------------------------------------------------------------------------------

def test_append_base64_is_binascii_strict() -> None:
    """The simulator's decoder (pybase64 first) accepts, decodes and refuses exactly as binascii's strict mode,
    on valid frames and on fuzzed near-base64 (padding in odd places, whitespace, URL-safe letters, str input)."""
    import binascii

    from harness.simulator import vad_stream

    assert vad_stream._simd_b64decode is not None  # the fast path is what is tested (pybase64 is a dependency)
    rng = random.Random(3)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    accepted = refused = 0
    for _ in range(20000):
        s = bytearray(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 2, 3, 4, 6, 8, 12, 1280])))
        for _ in range(rng.choice([0, 0, 1, 2])):
            if s:
                s[rng.randrange(len(s))] = rng.choice(b"=-_ \n.\xe9" + alphabet)
        if len(s) >= 2 and rng.random() < 0.3:
            s[-rng.choice([1, 2]):] = b"=="[: rng.choice([1, 2])]
        data = bytes(s)
        arg = data.decode("latin-1") if rng.random() < 0.2 else memoryview(data) if rng.random() < 0.5 else data
        try:
            want: bytes | str = binascii.a2b_base64(arg, strict_mode=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            want = f"invalid base64 audio: {exc}"
        try:
            got: bytes | str = vad_stream.decode_b64(arg)
        except ValueError as exc:
            got = str(exc)
        assert got == want, data[:40]
        accepted += isinstance(want, bytes)
        refused += isinstance(want, str)
    assert accepted > 1000 and refused > 1000
