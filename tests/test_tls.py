"""wss:// end to end: the simulator serves TLS, the harness trusts a given CA and nothing else (issue 15)."""

from __future__ import annotations

import json
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import gevent
import pytest
import yaml

import faultserver as fs
from harness.accuracy import compare
from harness.records import read_records
from harness.scenario import ScenarioError, load_scenario
from harness.tlsconf import self_signed

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "harness.cli"]
SCENARIO = {
    "name": "tls", "target": {"embedded": True, "profile": "ideal"},
    "session": {"modalities": ["text", "audio"], "input_audio_format": "pcm16", "output_audio_format": "pcm16",
                "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                   "silence_duration_ms": 500}},
    "conversation": [{"fixture": "cs_order_status", "pause_ms": 200}],
    "audio": {"chunk_ms": 20, "trailing_silence_ms": 800},
    "load": {"users": 2, "spawn_rate": 10, "duration": "2s", "turn_timeout": "10s", "stop_timeout": "10s"},
}


def write(tmp_path: Path, target: Any, name: str = "sc.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**SCENARIO, "target": target}))
    return path


@pytest.mark.serial  # exit 0 needs an unstarved generator; stamps within 2 ms: run alone (make test)
def test_run_over_wss_against_the_embedded_simulator(tmp_path):
    """``voiceload run --simulator-tls``: turns complete, first audio is measured against ground truth,
    and received events still carry the kernel's arrival stamps (TLS is driven sans-I/O)."""
    out = tmp_path / "out"
    run = subprocess.run(CLI + ["run", str(write(tmp_path, SCENARIO["target"])), "--simulator-tls",
                                "--sessions-per-user", "1", "--out", str(out), "--quiet"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["targets"][0]["url"].startswith("wss://127.0.0.1:")
    turns = list(read_records(out / "turns.jsonl"))
    assert len(turns) == 2 and all(t["complete"] and t["first_audio_ms"] > 0 for t in turns), turns
    cmp = compare([t for t in turns if t["valid"]], list(read_records(out / "truth-embedded.jsonl")))
    # both ends date reads with the kernel's arrival instant over TLS too (client/tlsio.py, kstamp.py)
    assert cmp and all(abs(c.error_ms) < 2.0 for c in cmp), cmp
    check = meta["self_check"]
    assert check["event_stamp"] == "kernel" and check["stamp_reads"] > 0, check


def test_embedded_tls_from_the_scenario_and_its_validation(tmp_path):
    sc = load_scenario(write(tmp_path, {"embedded": True, "tls": True}))
    assert sc.targets[0].tls
    with pytest.raises(ScenarioError, match=r"target\.tls: expected true or false"):
        load_scenario(write(tmp_path, {"embedded": True, "tls": "yes"}))


@pytest.fixture(scope="module")
def tls_sim(tmp_path_factory):
    """``voiceload simulate --tls-self-signed`` as a user starts it; yields (url, its CA file)."""
    d = tmp_path_factory.mktemp("sim")
    proc = subprocess.Popen(CLI + ["simulate", "--port", "0", "--profile", "ideal", "--tls-self-signed",
                                   "--tls-dir", str(d)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "simulator did not start"
        line = proc.stdout.readline()
        assert line.startswith("voiceload-simulator listening on wss://127.0.0.1:"), line
        err = proc.stderr.readline()
        assert err.startswith("voiceload-simulator CA file: "), err
        ca = err.split(": ", 1)[1].strip()
        assert ca == str(d / "ca.pem") and Path(ca).is_file()
        yield line.split(" on ", 1)[1].strip().removesuffix("/voice-live/realtime"), ca
    finally:
        proc.terminate()
        proc.wait(10)


def real_target(url: str, **extra: Any) -> dict:
    return {"name": "local", "endpoint": url, "model": "gpt-realtime", "auth": {"kind": "none"}, **extra}


def test_validate_connect_trusts_the_given_ca_and_refuses_another(tmp_path, tls_sim):
    url, ca = tls_sim
    ok = subprocess.run(CLI + ["validate", "--connect", str(write(tmp_path, real_target(url, ca_file=ca)))],
                        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "✓ local: connected" in ok.stdout, ok.stdout + ok.stderr
    other = self_signed(tmp_path / "other")  # a valid CA, just not the one that signed the simulator
    for target in (real_target(url, ca_file=other.ca), real_target(url)):  # wrong CA; system store
        bad = subprocess.run(CLI + ["validate", "--connect", str(write(tmp_path, target))],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "✗ local: TLS certificate problem" in bad.stdout and "certificate verify failed" in bad.stdout, \
            bad.stdout


@pytest.mark.parametrize("case", ["missing", "not_pem", "plain_ws"])
def test_bad_ca_file_is_refused_before_any_load(tmp_path, case):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    endpoint, ca, expected = {
        "missing": ("wss://127.0.0.1:9", str(tmp_path / "nope.pem"), f"{tmp_path / 'nope.pem'}: no such file"),
        "not_pem": ("wss://127.0.0.1:9", str(junk), f"{junk}: not a PEM certificate bundle"),
        "plain_ws": ("ws://127.0.0.1:9", str(self_signed(tmp_path / "ca").ca), "only for wss:// or https://"),
    }[case]
    path = write(tmp_path, real_target(endpoint, ca_file=ca))
    run = subprocess.run(CLI + ["validate", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "target.ca_file" in run.stderr and expected in run.stderr and str(path) in run.stderr, run.stderr


@pytest.mark.parametrize("args,expected", [
    (["--tls-cert", "x.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"], "--tls-cert /nonexistent/c.pem: no such"),
    (["--tls-self-signed", "--tls-key", "k.pem"], "exclude each other"),
])
def test_simulator_tls_flag_errors_exit_2(args, expected):
    run = subprocess.run(CLI + ["simulate", "--port", "0", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and expected in run.stderr, run.stderr


def test_transport_over_tls_from_an_independent_server_keeps_kernel_stamps(tmp_path):
    """Not the simulator: a stdlib-ssl thread server sends three frames, the first two in one TLS
    write, the last one at least 50 ms later; every message arrives whole and in order, and the reads carry
    the kernel's arrival stamp (the transport reads the TCP socket itself, tlsio.py)."""
    from harness.client.transport import connect
    from harness.tlsconf import client_context

    files = self_signed(tmp_path)
    messages = [b'{"type":"a"}', b'{"type":"b","pad":"' + b"x" * 3000 + b'"}', b'{"type":"c"}']

    def handler(sock: Any, stop: threading.Event) -> None:
        if not fs._accept_upgrade(sock):
            return
        def frame(m: bytes) -> bytes:
            return (struct.pack("!BB", 0x81, len(m)) if len(m) < 126 else struct.pack("!BBH", 0x81, 126, len(m))) + m

        stop.wait(0.3)  # after the upgrade's read, so the reader loop (recvmsg) gets them
        sock.sendall(frame(messages[0]) + frame(messages[1]))
        stop.wait(0.05)
        sock.sendall(frame(messages[2]))
        stop.wait(2)

    got: list[tuple[bytes, int]] = []
    with fs.RawServer(handler, ssl_files=(files.cert, files.key)) as srv:
        url = srv.url("wss").replace("127.0.0.1", "localhost")
        t = connect(url, {}, lambda data, stamp, binary: got.append((bytes(data), stamp)), kernel_stamps=True,
                    ssl_context=client_context(files.ca), open_timeout=10)
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            gevent.sleep(0.01)
        assert t.kernel_stamps and t.stamp_delays.n >= 1
        t.close()
    assert [m for m, _ in got[:3]] == messages
    stamps = [s for _, s in got[:3]]
    # One read for the first two; arrival instants are immune to our scheduling, so >= 50 ms apart.
    assert stamps[0] == stamps[1] <= stamps[2] - 45_000_000, stamps
