"""The simulator as a child process: ready line, clean SIGTERM shutdown, works under gevent."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.simulator import SimulatorProcess
from simclient import SimClient

ROOT = Path(__file__).resolve().parent.parent


def test_process_serves_and_reports_stats_on_sigterm(tmp_path):
    truth = tmp_path / "truth.jsonl"
    with SimulatorProcess(profile="ideal", truth_log=str(truth), seed=5,
                          overrides={"audio_pace": 8}) as sim:
        assert sim.url.startswith("ws://127.0.0.1:") and sim.port > 0 and sim.pid

        async def main():
            c = await SimClient.open(sim.url)
            await c.wait_for("session.created")
            await c.send({"type": "response.create"})
            await c.wait_for("response.done", 15)
            await c.close()

        asyncio.run(main())
        proc = sim.proc
    assert proc.returncode == 0
    stats = sim.final_stats
    assert stats["sessions_total"] == 1 and stats["responses_by_status"] == {"completed": 1}
    assert stats["seed"] == 5 and stats["loop_lag_ms"]["samples"] > 0
    assert truth.read_text().count("\n") == 1


def test_bad_profile_fails_fast_with_the_reason(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("audio_pace: {dist: warp}\n")
    with pytest.raises(RuntimeError, match="audio_pace.dist"):
        SimulatorProcess(profile=str(bad)).start()


def test_cli_prints_exactly_one_ready_line():
    proc = subprocess.Popen([sys.executable, "-m", "harness.simulator", "--port", "0", "--profile", "ideal"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("voiceload-simulator listening on ws://127.0.0.1:")
        assert line.rstrip().endswith("/voice-live/realtime")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert out.startswith("voiceload-simulator stats {") and out.count("\n") == 1


def test_simulator_process_under_gevent_monkey_patching():
    """Locust's world: everything patched; waiting for the ready line must not block other greenlets."""
    script = textwrap.dedent("""
        from gevent import monkey; monkey.patch_all()
        import gevent, socket
        from harness.simulator import SimulatorProcess
        ticks = []
        def ticker():
            while True:
                ticks.append(1); gevent.sleep(0.01)
        g = gevent.spawn(ticker)
        with SimulatorProcess(profile="ideal") as sim:
            started_ticks = len(ticks)
            host, port = "127.0.0.1", sim.port
            s = socket.create_connection((host, port), timeout=5)
            s.sendall((f"GET /voice-live/realtime?api-version=2026-07-15&model=m HTTP/1.1\\r\\nHost: {host}\\r\\n"
                       "Upgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n"
                       "Sec-WebSocket-Version: 13\\r\\n\\r\\n").encode())
            head = s.recv(4096).split(b"\\r\\n\\r\\n")[0].decode()
            s.close()
        g.kill()
        assert head.startswith("HTTP/1.1 101"), head
        assert started_ticks > 3, started_ticks  # the hub kept running while we waited
        assert sim.proc.returncode == 0 and sim.final_stats["sessions_total"] == 1
        print("OK", started_ticks)
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr
