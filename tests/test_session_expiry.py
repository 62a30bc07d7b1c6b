"""A conversation longer than the service's maximum session length loses no turn (harness/client/expiry.py).

Sessions last seconds here instead of 60 minutes. Through the real CLI: (a) the embedded simulator
with a short ``max_session_minutes`` (it sends ``expires_at`` and enforces the cap with
``session_expired`` + close 1001); (b) a small loopback server written here from the protocol reference
(§6, §6a), not our simulator: ``session.created`` carries ``expires_at`` (unix seconds, api-version
2026-07-15) and the session ends at that instant with ``error{code: session_expired}`` then close 1001;
(c) the same server ending a session early with no ``expires_at``: the reactive reconnect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import gevent
import pytest

import faultserver as fs
from harness.exitcodes import EXIT_OK
from harness.protocol import events as ev
from harness.records import read_records

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "harness.cli"]
TURNS = 4

SCENARIO = """
name: soak
target:
{target}
session:
  turn_detection: null
conversation:
{turns}
audio: {{trailing_silence_ms: 100}}
load:
  users: 1
  sessions_per_user: 1
  duration: 60s
  stop_timeout: 5s
  turn_timeout: 5s
  reconnect_margin: {margin}
  max_pacing_lag_ms: 250  # these tests judge reconnects, not timing, on a busy CI machine
thresholds: ['completeness >= 0.99']
"""


def _scenario(tmp: Path, target: str, margin: str = "300ms", n: int = TURNS) -> Path:
    turns = "\n".join("  - {fixture: car_call_mom, pause_ms: 100, manual_commit: true}" for _ in range(n))
    path = tmp / "soak.yaml"
    path.write_text(textwrap.dedent(SCENARIO).format(target=target, turns=turns, margin=margin), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _records(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    sessions = list(read_records(out / "sessions.jsonl"))
    assert len(sessions) == 1, sessions
    return sessions[0], list(read_records(out / "turns.jsonl")), json.loads((out / "run.json").read_text())


def _assert_no_turn_lost(session: dict[str, Any], turns: list[dict[str, Any]], meta: dict[str, Any],
                         min_reconnects: int) -> None:
    assert sorted(t["turn_index"] for t in turns) == list(range(TURNS))
    assert all(t["complete"] and not t["throttle"] for t in turns), [(t["turn_index"], t["error"]) for t in turns]
    assert session["turns_recorded"] == TURNS and session["outcome"] == "ok", session
    assert session["reconnects"] >= min_reconnects
    assert session["reconnect_reasons"] == ["planned"] * session["reconnects"]
    assert len(session["reconnect_gap_ms"]) == session["reconnects"] and all(g > 0 for g in session["reconnect_gap_ms"])
    # every reconnect is a new server session, and turn records say which one they were spoken on
    assert len({t["server_session_id"] for t in turns}) == session["reconnects"] + 1
    assert meta["reconnects"]["planned"] == session["reconnects"] and meta["reconnects"]["expired"] == 0
    assert any("planned between turns" in n for n in meta["notes"])


def test_simulator_sessions_of_three_seconds_lose_no_turn_of_a_longer_conversation(tmp_path):
    """(a) The embedded simulator caps sessions at 3 s (``expires_at`` 3-4 s ahead, whole seconds, and enforced then);
    four turns of ~2 s need four sessions."""
    profile = tmp_path / "short.yaml"
    text = (ROOT / "scenarios" / "profiles" / "ideal.yaml").read_text(encoding="utf-8")
    text = text.replace("quotas: none", "quotas: {preset: none, max_session_minutes: 0.05}")
    profile.write_text(text.replace("reply_length_ms: null", "reply_length_ms: {dist: fixed, value: 600}"),
                       encoding="utf-8")
    sc = _scenario(tmp_path, f"  name: sim\n  embedded: true\n  profile: {profile}")
    run = subprocess.run(CLI + ["run", str(sc), "--out", str(tmp_path / "out")], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=90)
    assert run.returncode == EXIT_OK, run.stdout[-2000:] + run.stderr[-3000:]
    assert "planned between turns" in run.stdout
    session, turns, meta = _records(tmp_path / "out")
    _assert_no_turn_lost(session, turns, meta, min_reconnects=2)
    truth = [json.loads(line) for line in (tmp_path / "out" / "truth-sim.jsonl").read_text().splitlines() if line]
    assert not [t for t in truth if t.get("throttle") == "session_expired"]  # the simulator never had to cut one


class ExpiringServer:
    """Voice Live as the reference describes it, just enough for push-to-talk turns, with a session cap.

    Each connection: ``session.created`` (``expires_at`` when ``announce``), ``session.updated`` after
    ``session.update``; each ``input_audio_buffer.commit`` + ``response.create`` answered after
    ``reply_delay_s`` (committed, response.created, output item, three 100 ms audio deltas,
    response.done). At ``expires_at`` (or ``lifetimes[i]`` s without it): ``error`` session_expired,
    close 1001 — a reply still pending is lost, as on the service."""

    def __init__(self, lifetimes: list[float], *, announce: bool, reply_delay_s: float = 0.2) -> None:
        self.lifetimes, self.announce, self.reply_delay_s = lifetimes, announce, reply_delay_s
        self.updates: list[dict[str, Any]] = []  # the session.update of each connection, event_id removed
        self.expired = 0  # sessions this server ended at their cap
        self.cut = 0  # responses that were pending when a session ended
        self.server = fs.ScriptServer(self.serve)

    def serve(self, conn: fs.Conn) -> None:
        n = self.server.connections - 1
        lifetime = self.lifetimes[min(n, len(self.lifetimes) - 1)]
        now = time.time()
        session: dict[str, Any] = {"id": f"sess_{n}", "object": "realtime.session", "model": "gpt-realtime"}
        end_wall = now + lifetime
        if self.announce:  # whole unix seconds (ResponseSession.expires_at, format unix-timestamp)
            session["expires_at"] = int(now + lifetime)
            end_wall = session["expires_at"]
        conn.send(ev.server_event(ev.SESSION_CREATED, session=session))
        if not conn.updated.wait(5):
            return
        update = next(e for e in conn.received if e.get("type") == ev.SESSION_UPDATE)
        self.updates.append({k: v for k, v in update.items() if k != "event_id"})
        conn.send(ev.server_event(ev.SESSION_UPDATED, session={**session, "modalities": ["text", "audio"],
                                                               "output_audio_format": "pcm16"}))
        seen, turn, due = 0, 0, None
        while time.time() < end_wall and not conn.closed.is_set():
            for e in conn.received[seen:]:
                if e.get("type") == ev.RESPONSE_CREATE:
                    due = time.monotonic() + self.reply_delay_s
            seen = len(conn.received)
            if due is not None and time.monotonic() >= due:
                turn, due = turn + 1, None
                rid, item = f"resp_{n}_{turn}", f"item_{n}_{turn}"
                conn.send(ev.server_event(ev.COMMITTED, item_id=item))
                conn.send(ev.server_event(ev.RESPONSE_CREATED, response=ev.response_object(rid)))
                conn.send(ev.server_event(ev.OUTPUT_ITEM_ADDED, response_id=rid, output_index=0,
                                          item={"id": f"out_{rid}", "type": "message", "role": "assistant"}))
                for _ in range(3):
                    conn.send(ev.server_event(ev.AUDIO_DELTA, response_id=rid, item_id=f"out_{rid}", output_index=0,
                                              content_index=0, delta=fs.AUDIO_100MS))
                conn.send(ev.server_event(ev.RESPONSE_DONE, response=ev.response_object(rid, status="completed")))
            gevent.sleep(0.02)
        if conn.closed.is_set():
            return
        self.expired += 1
        self.cut += due is not None
        conn.send(ev.error_event(f"Your session hit the maximum duration of {lifetime / 60:g} minutes.",
                                 code="session_expired"))
        conn.close(1001, "session expired")

    def run_cli(self, scenario: Path, out: Path) -> subprocess.CompletedProcess:
        """The CLI in a subprocess while this process's gevent hub serves the connections."""
        p = subprocess.Popen(CLI + ["run", str(scenario), "--out", str(out)], cwd=ROOT, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while p.poll() is None and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if p.poll() is None:
            p.kill()
        stdout, stderr = p.communicate(timeout=10)
        return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)

    def target(self) -> str:
        base = f"ws://127.0.0.1:{self.server.server.server_port}"  # /voice-live/realtime is appended
        return f"  name: ref\n  endpoint: {base}\n  model: gpt-realtime\n  auth: {{kind: none}}"


def test_reference_server_with_expires_at_loses_no_turn_and_gets_the_same_configuration(tmp_path):
    """(b) Sessions end at ``expires_at`` (2-3.5 s after they start); every turn is spoken on a
    session that outlives it, and each new session is configured exactly like the first."""
    srv = ExpiringServer([3.5], announce=True)
    with srv.server:
        run = srv.run_cli(_scenario(tmp_path, srv.target()), tmp_path / "out")
    assert run.returncode == EXIT_OK, run.stdout[-2000:] + run.stderr[-3000:]
    session, turns, meta = _records(tmp_path / "out")
    _assert_no_turn_lost(session, turns, meta, min_reconnects=2)
    assert srv.cut == 0 and not srv.server.errors
    assert len(srv.updates) == session["reconnects"] + 1
    assert all(u == srv.updates[0] for u in srv.updates) and srv.updates[0]["session"]["turn_detection"] is None


def test_an_unannounced_early_expiry_cuts_one_turn_and_the_conversation_goes_on(tmp_path):
    """(c) The first session ends after 1.8 s without any ``expires_at``, while the first reply is
    pending: that turn is classified session_expired, the caller reconnects and finishes the rest."""
    srv = ExpiringServer([1.8, 60.0], announce=False, reply_delay_s=1.0)
    with srv.server:
        run = srv.run_cli(_scenario(tmp_path, srv.target(), n=3), tmp_path / "out")
    assert run.returncode == EXIT_OK, run.stdout[-2000:] + run.stderr[-3000:]
    session, turns, meta = _records(tmp_path / "out")
    by_index = {t["turn_index"]: t for t in turns}
    assert sorted(by_index) == [0, 1, 2]
    assert not by_index[0]["complete"] and by_index[0]["throttle"] == "session_expired"
    assert by_index[1]["complete"] and by_index[2]["complete"]
    assert session["reconnects"] == 1 and session["reconnect_reasons"] == ["expired"]
    assert meta["reconnects"]["expired"] == 1 and meta["reconnects"]["planned"] == 0
    assert srv.expired == 1 and srv.cut == 1


def test_the_expiry_comes_from_expires_at_else_from_the_configured_maximum():
    from harness.client.expiry import expiry_ns, fits

    t0, wall = 5_000_000_000, 1_800_000_000.25
    assert expiry_ns({"expires_at": 1_800_000_060}, t0, 60, now_wall_s=wall) == t0 + 59_750_000_000
    assert expiry_ns({"expires_at": 1_800_000_060}, t0, None, now_wall_s=wall) == t0 + 59_750_000_000
    for odd in (None, True, "1800000060", 0, -5):  # not a unix timestamp: the configured maximum decides
        assert expiry_ns({"expires_at": odd}, t0, 0.5, now_wall_s=wall) == t0 + 30_000_000_000
    assert expiry_ns({}, t0, None) is None
    assert fits(None, t0, 1e6, 10)  # nothing known: every turn fits
    assert fits(t0 + 12_000_000_000, t0, 2.0, 10.0) and not fits(t0 + 11_999_999_999, t0, 2.0, 10.0)
