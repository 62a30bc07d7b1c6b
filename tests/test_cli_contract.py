"""The CLI contract of issue 11, driven as a user does: ``voiceload`` as a subprocess, real signals,
exit codes (0 pass, 1 breach, 2 usage, 3 incomplete) and the verdict line the console ends with.

Runs are one or two short sessions against the embedded simulator (ideal profile); refusals come
from a small independent loopback server (tests/faultserver.py) that answers every handshake 401.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faultserver import RawServer
from harness.exitcodes import EXIT_BREACH, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from harness.records import RecordWriter, SessionRecord, TurnRecord
from ports import refused_port

ROOT = Path(__file__).resolve().parent.parent
VOICELOAD = str(Path(sys.executable).parent / "voiceload")

TINY = """\
name: tiny
target: {{embedded: true, profile: ideal}}
session:
  turn_detection: {{type: server_vad, silence_duration_ms: 500}}
  input_audio_transcription: {{model: azure-speech, language: en-US}}
fixtures_dir: {fixtures}
conversation:
  - fixture: car_call_mom
    pause_ms: 100
{expect}
audio: {{trailing_silence_ms: 300}}
load: {{users: 1, spawn_rate: 5, duration: 60s, turn_timeout: 10s, stop_timeout: 3s, max_pacing_lag_ms: 5000}}
thresholds: {thresholds}
"""


def scenario(tmp_path: Path, *, expect: str = "", thresholds: str = "['completeness >= 0.5']",
             name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(TINY.format(fixtures=ROOT / "audio_fixtures", expect=expect, thresholds=thresholds),
                 encoding="utf-8")
    return p


def vl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([VOICELOAD, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# -- the verdict: run / check / report agree, and name what failed ----------------------------------------
@pytest.fixture(scope="module")
def failing_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One session whose threshold and expectation cannot hold, run with --duration overriding 60s."""
    tmp = tmp_path_factory.mktemp("fail")
    sc = scenario(tmp, expect="    expect: {response_contains: zebra-xylophone}",
                  thresholds="['first_audio_ms.p95 <= 1', 'completeness >= 0.5']")
    out = tmp / "run"
    return out, vl("run", str(sc), "--duration", "2s", "--sessions-per-user", "1", "--out", str(out), "--quiet")


def test_run_ends_with_a_verdict_naming_what_failed(failing_run):
    out, proc = failing_run
    assert proc.returncode == EXIT_BREACH, proc.stderr
    line = last_line(proc.stdout)
    assert line.startswith("VERDICT: FAIL — first_audio_ms.p95 [embedded] "), line
    assert "> 1;" in line and "1 expectation failed (response_contains:zebra-xylophone ×1)" in line
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete" and meta["verdict"]["status"] == "FAIL"
    # item 7: run.json records what ran (--duration 2s, --sessions-per-user 1), the scenario's load beside it
    assert meta["load"]["duration_s"] == 2 and meta["load"]["sessions_per_user"] == 1
    assert meta["load"]["overridden"] == ["duration", "sessions_per_user"]
    assert meta["scenario_load"]["duration_s"] == 60


def test_report_opens_with_the_verdict_and_shows_expectations_beside_thresholds(failing_run):
    out, _ = failing_run
    html = (out / "report.html").read_text()
    banner = html[html.index("id='verdict'"):]
    assert html.index("id='verdict'") < html.index("id='overview'")
    assert "VERDICT: FAIL" in banner[:400] and "first_audio_ms.p95 [embedded]" in banner[:800]
    assert "response_contains:zebra-xylophone" in banner[:800]
    section = html[html.index("<section id='thresholds'>"):]
    section = section[:section.index("</section>")]
    assert "<h3>Thresholds</h3>" in section and "<h3>Expectations</h3>" in section
    assert "response_contains:zebra-xylophone" in section


def test_check_counts_expectations_unless_allowed(failing_run, tmp_path):
    out, _ = failing_run
    lax = tmp_path / "lax.yaml"
    lax.write_text("thresholds: ['completeness >= 0.5']\n")
    proc = vl("check", str(out), "--thresholds", str(lax))
    assert proc.returncode == EXIT_BREACH and last_line(proc.stdout).startswith(
        "VERDICT: FAIL — 1 expectation failed"), proc.stdout
    proc = vl("check", str(out), "--thresholds", str(lax), "--allow-expectation-failures")
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
    assert last_line(proc.stdout).startswith("VERDICT: PASS") and "allowed by --allow-expectation-failures" in proc.stdout
    proc = vl("check", str(out), "--allow-expectation-failures")  # run.json's thresholds: still breached
    assert proc.returncode == EXIT_BREACH and "first_audio_ms.p95" in last_line(proc.stdout)


def test_check_lists_every_bad_threshold_with_file_and_field(failing_run, tmp_path):  # item 14
    out, _ = failing_run
    bad = tmp_path / "bad.yaml"
    bad.write_text("thresholds: ['first_audio_ms.p95 <= 1500', 'first_audoi_ms.p95 < 3', 'completeness >= x',"
                   " 'vad_ms <= 3']\n")
    proc = vl("check", str(out), "--thresholds", str(bad))
    assert proc.returncode == EXIT_USAGE
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert [e.split(": ")[2] for e in errors] == ["thresholds[1]", "thresholds[2]", "thresholds[3]"], proc.stderr
    assert all(f"{bad}: thresholds[" in e for e in errors)
    assert "first_audoi_ms" in errors[0] and "'x' is not a number" in errors[1] and "needs a stat" in errors[2]


def test_missing_and_empty_run_directories_are_input_errors(tmp_path):  # items 4 and 10
    for cmd in ("check", "report"):
        proc = vl(cmd, "/no/such/dir")
        assert proc.returncode == EXIT_USAGE, (cmd, proc.stdout, proc.stderr)
        assert proc.stderr.strip() == "error: /no/such/dir: no such run directory" and "Traceback" not in proc.stderr
        proc = vl(cmd, str(tmp_path))
        assert proc.returncode == EXIT_USAGE and "not a run directory" in proc.stderr, (cmd, proc.stderr)
    assert not (tmp_path / "report.html").exists()  # no silent empty report


def test_report_on_a_run_without_turns_says_incomplete(tmp_path):  # item 10
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "r", "thresholds": ["completeness >= 0.9"]}))
    proc = vl("report", str(tmp_path))
    assert proc.returncode == EXIT_INCOMPLETE, proc.stderr
    assert last_line(proc.stdout) == "VERDICT: INCOMPLETE — no data: no session ran and no turn was recorded"
    assert "VERDICT: INCOMPLETE" in (tmp_path / "report.html").read_text()


def test_a_run_killed_before_it_ended_is_never_a_pass(tmp_path):
    with RecordWriter(tmp_path / "turns.jsonl") as w:
        w.write(TurnRecord(target="t", first_audio_ms=500.0, complete=True, reason="complete"))
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "k", "started": "2026-11-30T03:00:00+00:00",
                                                   "ended": None, "status": "running"}))
    proc = vl("check", str(tmp_path))
    assert proc.returncode == EXIT_INCOMPLETE, proc.stdout + proc.stderr
    assert "the run did not finish" in last_line(proc.stdout)


# -- barge-in: the interrupted turn is an expected outcome (item 13) -----------------------------------
def test_interrupted_turns_that_were_expected_are_not_failures(tmp_path):
    with RecordWriter(tmp_path / "turns.jsonl") as w:
        for i in range(3):
            w.write(TurnRecord(target="t", session_id=f"s{i}", turn_index=0, first_audio_ms=500.0, complete=True,
                               reason="complete", t_speech_end=1_795_000_000.0 + i))
            w.write(TurnRecord(target="t", session_id=f"s{i}", turn_index=1, first_audio_ms=400.0, complete=False,
                               reason="cancelled", t_speech_end=1_795_000_001.0 + i,
                               expectations=[{"name": "reason", "ok": True, "detail": "actual=cancelled"}]))
    with RecordWriter(tmp_path / "sessions.jsonl") as w:
        w.write_many(SessionRecord(target="t", session_id=f"s{i}") for i in range(3))
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "b", "thresholds": ["completeness >= 1"],
                                                   "status": "complete"}))
    proc = vl("check", str(tmp_path))
    assert proc.returncode == EXIT_OK and last_line(proc.stdout).startswith("VERDICT: PASS"), proc.stdout
    proc = vl("report", str(tmp_path))
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
    import pandas as pd

    row = pd.read_csv(tmp_path / "summary.csv").iloc[0]
    assert row["completeness"] == 1 and row["failures"] == 0 and row["interrupted_as_expected"] == 3
    html = (tmp_path / "report.html").read_text()
    assert "<dt>failures</dt><dd>0</dd>" in html and "<dt>completeness</dt><dd>100.00%</dd>" in html
    assert "<dt>interrupted as expected</dt><dd>3</dd>" in html


# -- compare (item 11) ---------------------------------------------------------------------------------
def _synthetic_run(d: Path, latency_ms: float, n: int = 60) -> Path:
    d.mkdir()
    with RecordWriter(d / "turns.jsonl") as w:
        w.write_many(TurnRecord(target="t", session_id=f"s{i}", first_audio_ms=latency_ms + i % 7, complete=True,
                                reason="complete", t_speech_end=1_795_000_000.0 + i) for i in range(n))
    (d / "run.json").write_text(json.dumps({"run_id": d.name}))
    return d


def test_compare_fails_on_a_significant_regression_only_when_asked(tmp_path):
    a, b = _synthetic_run(tmp_path / "a", 500.0), _synthetic_run(tmp_path / "b", 900.0)
    proc = vl("compare", str(a), str(b), "--out", str(tmp_path / "c1"))
    assert proc.returncode == EXIT_OK and "regression: b first_audio_ms.p50" in proc.stdout, proc.stdout
    assert "add --fail-on-regression" in proc.stdout
    proc = vl("compare", str(a), str(b), "--out", str(tmp_path / "c2"), "--fail-on-regression")
    assert proc.returncode == EXIT_BREACH, proc.stdout + proc.stderr
    proc = vl("compare", str(a), "--out", str(tmp_path / "c3"), "--fail-on-regression")
    assert proc.returncode == EXIT_INCOMPLETE and "Nothing to compare" in proc.stdout, proc.stdout
    assert vl("compare", str(a), "/no/such/dir").returncode == EXIT_USAGE


# -- simulate (item 1) and --help (exit codes) -----------------------------------------------------------
def test_simulate_takes_its_documented_flags_and_help(tmp_path):
    proc = vl("simulate", "-h")
    assert proc.returncode == 0 and "--truth-log" in proc.stdout and "--profile" in proc.stdout
    truth = tmp_path / "truth.jsonl"
    sim = subprocess.Popen([VOICELOAD, "simulate", "--port", "0", "--profile", "realistic", "--truth-log", str(truth)],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = sim.stdout.readline()
        assert line.startswith("voiceload-simulator listening on ws://127.0.0.1:"), line + sim.stderr.read()
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        sim.send_signal(signal.SIGTERM)
        out, err = sim.communicate(timeout=20)
    assert sim.returncode == 0, err
    assert "voiceload-simulator stats" in out


def test_help_documents_the_exit_codes():
    proc = vl("--help")
    assert proc.returncode == 0
    epilog = proc.stdout[proc.stdout.index("exit codes"):]
    for code, words in ((0, "pass"), (1, "thresholds or expectations breached"), (2, "usage or input error"),
                        (3, "run incomplete")):
        assert f"  {code}  {words}" in epilog, epilog
    assert "--fail-on-regression" in epilog and "--allow-expectation-failures" in epilog


# Interrupted runs (item 6): tests/test_reliability_run.py::test_signal_mid_run_keeps_records_and_report
# sends real SIGINT / SIGTERM to `voiceload run` and checks exit 3, run.json status and the banner.


# -- refused sessions abort the run at once (item 8) -------------------------------------------------------
BODY = b'{"error":{"code":"401","message":"Access denied due to invalid subscription key."}}'


def _refuse(sock, stop) -> None:
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            return
        data += chunk
    sock.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + BODY)


def test_every_session_refused_aborts_with_the_diagnosis_and_exit_3(tmp_path):
    out = tmp_path / "run"
    with RawServer(_refuse) as srv:
        proc = vl("run", str(scenario(tmp_path)), "--target", srv.url(), "--users", "3", "--spawn-rate", "10",
                  "--duration", "60s", "--out", str(out), timeout=60)
    assert proc.returncode == EXIT_INCOMPLETE, proc.stderr
    abort = [ln for ln in proc.stderr.splitlines() if ln.startswith("aborting: ")]
    assert len(abort) == 1 and "first 3 sessions were all refused (HTTP 401 ×3)" in abort[0], proc.stderr
    assert "authentication failed (HTTP 401)" in abort[0]
    progress = [ln for ln in proc.stderr.splitlines() if "failures=" in ln]
    assert progress and "failures=3 (turns 0, sessions 3) rejected=3" in progress[-1], proc.stderr
    assert last_line(proc.stdout).startswith("VERDICT: INCOMPLETE — aborted: load.abort_on.refused_sessions")
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "aborted" and "HTTP 401" in meta["abort_reason"]
    sessions = (out / "sessions.jsonl").read_text()
    everything = proc.stdout + proc.stderr + sessions + (out / "report.html").read_text()
    assert "Access denied due to invalid subscription key" in sessions  # the body, decoded
    assert "bytearray" not in everything


def test_abort_on_can_be_switched_off(tmp_path):
    text = scenario(tmp_path).read_text().replace("5000}", "5000, abort_on: "
                                                                          "{refused_sessions: 0}}")
    p = tmp_path / "off.yaml"
    p.write_text(text)
    with RawServer(_refuse) as srv:
        proc = vl("run", str(p), "--target", srv.url(), "--users", "2", "--duration", "2s", "--out",
                  str(tmp_path / "run"), "--quiet", timeout=60)
    assert "aborting" not in proc.stderr
    # no abort, but a run where every session was refused is still not a pass
    assert proc.returncode == EXIT_INCOMPLETE, proc.stdout + proc.stderr
    assert re.search(r"VERDICT: INCOMPLETE — no data: all (\d+) sessions refused or failed \(HTTP 401 ×\1\)",
                     proc.stdout), proc.stdout


def test_abort_on_is_validated(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(scenario(tmp_path).read_text().replace("5000}", "5000, abort_on: "
                                                                                "{refused_session: 2}}"))
    proc = vl("validate", str(p))
    assert proc.returncode == EXIT_USAGE and f"{p}: load.abort_on.refused_session: unknown field" in proc.stderr


# -- validate (items 9 and 15) -------------------------------------------------------------------------------
def _target_scenario(tmp_path: Path, target: str) -> Path:
    p = tmp_path / "t.yaml"
    p.write_text(f"name: t\ntarget: {target}\nfixtures_dir: {ROOT / 'audio_fixtures'}\n"
                 "conversation:\n  - fixture: car_call_mom\n", encoding="utf-8")
    return p


def test_validate_connect_says_it_could_not_connect(tmp_path):
    with refused_port() as port:  # nothing listens there, and nothing can while we hold it
        p = _target_scenario(tmp_path, f"{{name: local, endpoint: 'ws://127.0.0.1:{port}', model: gpt-realtime, "
                                       "auth: {kind: none}}")
        proc = vl("validate", "--connect", str(p))
    assert proc.returncode == 1
    assert "✗ local: connection refused or unreachable" in proc.stdout, proc.stdout
    assert "connected but" not in proc.stdout


def test_validate_connect_reports_a_missing_entra_credential_once(tmp_path):
    p = _target_scenario(tmp_path, "{name: far, endpoint: 'https://voiceload-nosuch.invalid', model: gpt-realtime, "
                                   "auth: {kind: entra}}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_"))}
    env["PATH"] = "/usr/bin:/bin"  # no az / azd / pwsh on it
    proc = subprocess.run([VOICELOAD, "validate", "--connect", str(p)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    both = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "✗ far: could not connect: " in proc.stdout, both
    assert "connected but" not in both
    assert both.count("DefaultAzureCredential failed to retrieve a token") == 1, both


@pytest.mark.parametrize("label, session, conversation, field, words", [
    ("transcript without transcription", "{turn_detection: {type: server_vad}}",
     "  - fixture: car_call_mom\n    expect: {transcript_contains: mom}\n",
     "conversation[0].expect.transcript_contains", "input transcription is off"),
    ("transcription switched off", "{input_audio_transcription: null}",
     "  - fixture: car_call_mom\n    expect: {transcript_contains: mom}\n",
     "conversation[0].expect.transcript_contains", "input transcription is off"),
    ("cancelled with nothing to interrupt", "{input_audio_transcription: {model: azure-speech}}",
     "  - fixture: car_call_mom\n    expect: {reason: cancelled}\n  - fixture: car_call_mom\n",
     "conversation[0].expect.reason", "needs the next turn to interrupt"),
    ("cancelled on the last turn", "{}",
     "  - fixture: car_call_mom\n  - fixture: car_call_mom\n    expect: {reason: cancelled}\n",
     "conversation[1].expect.reason", "there is no next turn"),
])
def test_validate_refuses_expectations_that_can_never_pass(tmp_path, label, session, conversation, field, words):
    p = tmp_path / "x.yaml"
    p.write_text(f"name: x\nsession: {session}\nfixtures_dir: {ROOT / 'audio_fixtures'}\nconversation:\n"
                 f"{conversation}", encoding="utf-8")
    proc = vl("validate", str(p))
    assert proc.returncode == EXIT_USAGE, proc.stdout
    assert f"{p}: {field}: can never pass" in proc.stderr and words in proc.stderr, proc.stderr


def test_validate_accepts_expectations_that_can_pass(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text(f"name: ok\nsession: {{input_audio_transcription: {{model: azure-speech}}}}\n"
                 f"fixtures_dir: {ROOT / 'audio_fixtures'}\nconversation:\n"
                 "  - fixture: car_call_mom\n    expect: {transcript_contains: mom, reason: cancelled}\n"
                 "  - fixture: car_call_mom\n    barge_in_after_ms: 500\n", encoding="utf-8")
    proc = vl("validate", str(p))
    assert proc.returncode == EXIT_OK, proc.stderr


def test_a_real_barge_in_run_counts_the_interrupted_turn_as_expected(tmp_path):  # item 13, end to end
    import yaml

    data = yaml.safe_load((ROOT / "scenarios" / "barge_in.yaml").read_text(encoding="utf-8"))
    data["conversation"] = data["conversation"][:2]  # the interrupted turn and the one that barges in
    data["load"].update(stop_timeout="5s", think_time=0, max_pacing_lag_ms=5000)
    data["audio"] = {"trailing_silence_ms": 300}
    data["target"]["profile"] = "ideal"
    data["thresholds"] = ["completeness >= 1"]
    data["fixtures_dir"] = str(ROOT / "audio_fixtures")
    sc = tmp_path / "barge.yaml"
    sc.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    out = tmp_path / "run"
    proc = vl("run", str(sc), "--users", "1", "--sessions-per-user", "1", "--duration", "2s", "--out", str(out))
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
    assert last_line(proc.stdout).startswith("VERDICT: PASS"), proc.stdout
    progress = [ln for ln in proc.stderr.splitlines() if "failures=" in ln]
    assert "failures=0 (turns 0, sessions 0)" in progress[-1], proc.stderr
    import pandas as pd

    turns = pd.read_json(out / "turns.jsonl", lines=True)
    assert sorted(turns["reason"]) == ["cancelled", "complete"]
    row = pd.read_csv(out / "summary.csv").iloc[0]
    assert row["interrupted_as_expected"] == 1 and row["failures"] == 0 and row["completeness"] == 1


def test_a_signal_while_the_run_starts_still_ends_incomplete_with_a_report(tmp_path):  # item 6, start-up
    out = tmp_path / "run"
    proc = subprocess.Popen([VOICELOAD, "run", str(scenario(tmp_path)), "--out", str(out), "--quiet"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # run.json is written before the targets start (bounded: 60 s)
            if (out / "run.json").is_file() or proc.poll() is not None:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INCOMPLETE, stderr
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["interrupted"]["signal"] == "SIGTERM", meta
    assert last_line(stdout).startswith("VERDICT: INCOMPLETE — interrupted by SIGTERM"), stdout
    assert "VERDICT: INCOMPLETE" in (out / "report.html").read_text()
