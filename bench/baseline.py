"""The baseline: a deliberately plain client, the way most voice load scripts are written.

One OS thread per session streams frames with ``time.sleep(chunk)`` after each send (``naive``) or,
as the one fix a careful author would make, sleeps until an absolute deadline (``deadline``); a
second thread per session blocks in ``websocket-client``'s ``recv()``, stamps ``time.time()`` and
parses with ``json``. Lateness is measured against the *ideal* schedule t0 + k·chunk, so the naive
loop's drift shows. Same conversation, simulator, window and accuracy join as the harness steps.

    python -m bench.baseline '<json config>'
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from pathlib import Path

from bench import stats as S
from harness.histogram import MsHistogram

ROOT = Path(__file__).resolve().parents[1]


class Session:
    def __init__(self, cfg: dict, utterances: list, silence: str, chunk_ms: int, first_pause_ms: int):
        self.cfg, self.utts, self.silence, self.chunk = cfg, utterances, silence, chunk_ms / 1000
        self.first_pause_ms = first_pause_ms
        self.hist = MsHistogram()
        self.last_late, self.late_at_reset = 0.0, 0.0
        self.turns: list[dict] = []
        self.cur: dict | None = None
        self.done = threading.Event()
        self.updated = threading.Event()
        self.alive = False
        self.error = ""
        self.ws = None

    def reset_window(self) -> None:
        self.hist = MsHistogram()
        self.late_at_reset = self.last_late

    # -- receiver thread -------------------------------------------------------------------------
    def receive(self) -> None:
        while True:
            try:
                msg = self.ws.recv()
            except Exception:
                return
            t = time.time()
            ev = json.loads(msg)
            kind = ev.get("type")
            turn = self.cur
            if kind == "session.updated":
                self.updated.set()
            elif turn is None:
                continue
            elif kind == "response.created":
                turn["response_id"] = ev["response"]["id"]
            elif kind == "response.audio.delta" and "first_audio" not in turn:
                turn["first_audio"] = t
            elif kind == "response.done":
                turn["complete"] = ev["response"].get("status") == "completed"
                turn["done"] = t
                self.done.set()

    # -- sender thread ---------------------------------------------------------------------------
    def send(self, msg: str, k: int) -> None:
        self.ws.send(msg)
        late = (time.time() - (self.t0 + k * self.chunk)) * 1000  # against the ideal schedule
        late = late if late > 0 else 0.0
        self.last_late = late
        self.hist.add(late)

    def pace(self, k: int) -> None:
        if self.cfg.get("pacing") == "deadline":
            delay = self.t0 + (k + 1) * self.chunk - time.time()
            if delay > 0:
                time.sleep(delay)
        else:
            time.sleep(self.chunk)

    def run(self) -> None:
        import websocket  # websocket-client

        from harness.client.endpoints import embedded_endpoint

        url = embedded_endpoint("baseline", self.cfg["url"]).url()
        try:
            self.ws = websocket.create_connection(url, skip_utf8_validation=True, timeout=30)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return
        self.ws.settimeout(None)
        threading.Thread(target=self.receive, daemon=True).start()
        self.ws.send(json.dumps({"type": "session.update", "session": self.cfg["session"]}))
        self.updated.wait(30)
        self.alive = True
        self.t0, k = time.time(), 0
        for i in range(10_000):
            fx = self.utts[i % len(self.utts)]
            pause = self.first_pause_ms if i == 0 else fx["pause_ms"]
            for _ in range(pause // 20):
                self.send(self.silence, k)
                self.pace(k)
                k += 1
            self.cur = turn = {"buffer_ms": k * 20}
            self.done.clear()
            for j, b64 in enumerate(fx["frames"]):
                self.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64}), k)
                if (j + 1) * 20 >= fx["speech_end_ms"] > j * 20:
                    turn["speech_end"] = time.time() - ((j + 1) * 20 - fx["speech_end_ms"]) / 1000
                self.pace(k)
                k += 1
            turn["speech_end_audio_ms"] = turn["buffer_ms"] + fx["speech_end_ms"]
            deadline = time.time() + 15
            while not self.done.is_set() and time.time() < deadline:  # the mic stays open
                self.send(self.silence, k)
                self.pace(k)
                k += 1
            self.turns.append(turn)


def _material(cfg: dict):
    from harness import audio, fixtures
    from harness.scenario import load_scenario

    sc = load_scenario(ROOT / cfg.get("scenario", "scenarios/smoke.yaml"))
    fmt = audio.input_format(sc.session.get("input_audio_format", "pcm16"), None)
    utts = [{"frames": fixtures.frames(t.fixture, fmt, 20).frames, "pause_ms": t.pause_ms,
             "speech_end_ms": fixtures.frames(t.fixture, fmt, 20).speech_end_ms} for t in sc.conversation]
    silence = json.dumps({"type": "input_audio_buffer.append", "audio": fixtures.silence_frames(fmt, 20)[0]})
    return sc.session, utts, silence


def run(cfg: dict) -> dict:
    S.pin(cfg.get("cpu"))
    os.chdir(ROOT)
    session_cfg, utts, silence = _material(cfg)
    cfg["session"] = session_cfg
    n = int(cfg["sessions"])
    rng = random.Random(cfg.get("seed", 1))
    sessions = [Session(cfg, utts, silence, 20, rng.randrange(cfg.get("spread_ms", 7000))) for _ in range(n)]
    rss_base = S.rss_bytes()
    win = S.Window(cfg.get("cpu"), cfg.get("sim_pid"), cfg.get("sim_cpu"))
    for i, s in enumerate(sessions):
        threading.Thread(target=s.run, daemon=True).start()
        time.sleep(cfg["ramp_s"] / n)
    time.sleep(cfg["settle_s"])
    for s in sessions:
        s.reset_window()
    w0 = time.time()
    win.start(time.monotonic())
    time.sleep(cfg["window_s"])
    w1 = time.time()
    res = win.end(time.monotonic())
    snaps = [(s.hist.copy(), s.alive) for s in sessions]  # C-speed copies
    drift = sorted((s.last_late - s.late_at_reset) / res["window_s"] for s in sessions if s.alive)
    time.sleep(cfg["grace_s"])
    late, live = MsHistogram(), 0
    for h, alive in snaps:
        live += alive
        late.merge(h)
    turns = []
    for s in sessions:
        for t in list(s.turns):
            if "speech_end" in t and w0 <= t["speech_end"] <= w1:
                fa = (t["first_audio"] - t["speech_end"]) * 1000 if "first_audio" in t else None
                turns.append({"response_id": t.get("response_id"), "first_audio_ms": fa, "valid": True,
                              "t_speech_end": t["speech_end"],
                              "speech_end_audio_ms": t["speech_end_audio_ms"], "complete": t.get("complete", False),
                              "reason": "", "generator_lag_ms": None, "pacing_late_max_ms": None})
    res.update({
        "sessions": n, "sessions_streaming": live,
        "session_problems": {e: sum(1 for s in sessions if s.error == e) for e in {s.error for s in sessions if s.error}},
        "frames": late.n, "frames_per_s": round(late.n / res["window_s"], 1), **late.summary("late"),
        "threads": threading.active_count(),
        "drift_ms_per_s": round(drift[len(drift) // 2], 3) if drift else None,
        "rss_base": rss_base, "turns": turns,
        "clock": "wall", "w0_ns": int(w0 * 1e9), "w1_ns": int(w1 * 1e9), "wall_minus_mono_ns": 0,
    })
    return res


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    Path(cfg["out"]).write_text(json.dumps(run(cfg)))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
