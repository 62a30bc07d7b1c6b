"""No secret ever leaves the process: whole runs with distinctive fake credentials, then a grep.

A simulator that *requires* credentials (API key, bearer token, classic agent token) serves four
targets, one of them with a wrong key. The same scenario runs through ``voiceload run`` and through
Locust (headless, --csv, --html) at the same time; ``voiceload validate --connect`` probes the wrong
key. Afterwards every file they wrote (records, reports, CSV, HTML, ground truth, the simulator's log
at INFO) and everything they printed is searched for each secret, its URL-encoded forms and a
distinctive fragment of it: none may appear. The right credentials must also have *worked*, or
the grep would prove nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from harness.records import read_records
from harness.simulator import SimulatorProcess

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-VOICELOAD-SECRET-1234567890abcdef"
BEARER = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJGQUtFSldUIjoidm9pY2Vsb2FkIn0.FAKEJWT-signature-0123456789"
AGENT = "agent-access-token-VOICELOAD-AGENT-0987654321"
WRONG = "sk-VOICELOAD-WRONG-KEY-fedcba0987654321"
SECRETS = {"api key": KEY, "bearer token": BEARER, "agent token": AGENT, "wrong key": WRONG}
FRAGMENTS = ("VOICELOAD-SECRET", "FAKEJWT", "eyJGQUtFSldUIjoidm9pY2Vsb2FkIn0", "VOICELOAD-AGENT", "VOICELOAD-WRONG",
             "1234567890abcdef", "fedcba0987654321", "0987654321")
ENV = {"VL_TEST_KEY": KEY, "VL_TEST_TOKEN": BEARER, "VL_TEST_AGENT": AGENT, "VL_TEST_WRONG_KEY": WRONG}

TARGETS = """\
  - {{name: key, endpoint: "ws://127.0.0.1:{port}", model: gpt-realtime,
      auth: {{kind: api_key, api_key_env: VL_TEST_KEY}}}}
  - {{name: key_in_query, endpoint: "ws://127.0.0.1:{port}", model: gpt-realtime,
      auth: {{kind: api_key, api_key_env: VL_TEST_KEY, in_query: true}}}}
  - {{name: bearer, endpoint: "ws://127.0.0.1:{port}", model: gpt-realtime,
      auth: {{kind: token, token_env: VL_TEST_TOKEN}}}}
  - {{name: agent, endpoint: "ws://127.0.0.1:{port}", auth: {{kind: none}},
      agent: {{agent_id: asst_voiceload, project_name: proj, access_token_env: VL_TEST_AGENT}}}}
"""
WRONG_TARGET = """\
  - {{name: wrong, endpoint: "ws://127.0.0.1:{port}", model: gpt-realtime,
      auth: {{kind: api_key, api_key_env: VL_TEST_WRONG_KEY}}}}
"""
SCENARIO = """\
name: secrets
targets:
{targets}session:
  turn_detection: {{type: server_vad, silence_duration_ms: 500}}
  input_audio_transcription: {{model: azure-speech}}
conversation:
  - {{fixture: car_call_mom, pause_ms: 200}}
audio: {{trailing_silence_ms: 200}}
load: {{users: 5, spawn_rate: 5, duration: 8s, turn_timeout: 4s, stop_timeout: 4s,
       max_pacing_lag_ms: 5000}}  # judges secrets, not timing: a busy machine must not make it exit 3
"""


class LoggingSimulator(SimulatorProcess):
    """The simulator with its handshake log on (INFO), so that log is searched too."""

    def command(self) -> list[str]:
        return super().command() + ["--log-level", "INFO"]


def _env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_VOICELIVE", "VOICELOAD_"))}
    e.update(ENV, PYTHONUNBUFFERED="1")
    return e


def _needles() -> dict[str, str]:
    out = {}
    for label, value in SECRETS.items():
        for form in {value, quote_plus(value), quote(value, safe="")}:
            out[form] = label
    for frag in FRAGMENTS:
        out[frag] = f"fragment {frag}"
    return out


def _leaks(text: str, where: str) -> list[str]:
    return [f"{label} in {where}" for needle, label in _needles().items() if needle in text]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secrets")
    auth = {"required": True, "api_keys": [KEY], "bearer_tokens": [BEARER], "agent_tokens": [AGENT]}
    with LoggingSimulator(profile="ideal", overrides={"auth": auth}, log_file=str(tmp / "simulator.log"),
                          truth_log=str(tmp / "truth.jsonl")) as sim:
        port = sim.port
        scenario = tmp / "secrets.yaml"
        scenario.write_text(SCENARIO.format(targets=TARGETS.format(port=port) + WRONG_TARGET.format(port=port)))
        wrong_only = tmp / "wrong.yaml"
        wrong_only.write_text(SCENARIO.format(targets=WRONG_TARGET.format(port=port)))
        commands = {
            "run": [sys.executable, "-m", "harness.cli", "run", str(scenario), "--out", str(tmp / "run")],
            "locust": [sys.executable, "-m", "locust", "-f", str(ROOT / "harness" / "locustfile.py"), "--headless",
                       "--scenario", str(scenario), "-u", "2", "-r", "2", "-t", "8s", "--csv", str(tmp / "loc"),
                       "--html", str(tmp / "loc.html"), "--voiceload-out", str(tmp / "locust-out"),
                       "--loglevel", "DEBUG"],
            "probe": [sys.executable, "-m", "harness.cli", "validate", "--connect", str(wrong_only)],
        }
        procs = {}
        # Output goes to files, not pipes: a child blocked on a full pipe would freeze its event loop.
        for name, cmd in commands.items():
            with open(tmp / f"{name}.stdout", "w") as so, open(tmp / f"{name}.stderr", "w") as se:
                procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=so, stderr=se, text=True)
        results = {}
        try:
            for name, p in procs.items():
                p.wait(timeout=120)
                results[name] = {"rc": p.returncode, "stdout": (tmp / f"{name}.stdout").read_text(),
                                 "stderr": (tmp / f"{name}.stderr").read_text()}
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
    # The simulator has stopped: its log and final stats are complete.
    yield {"tmp": tmp, "results": results, "sim_stats": sim.final_stats or {}, "wrong_scenario": wrong_only}


def test_the_right_credentials_worked_and_the_wrong_one_was_refused(runs):
    tmp = runs["tmp"]
    assert runs["results"]["run"]["rc"] in (0, 1), runs["results"]["run"]["stderr"][-3000:]
    sessions = list(read_records(tmp / "run" / "sessions.jsonl"))
    by_target = {}
    for s in sessions:
        by_target.setdefault(s["target"], []).append(s)
    for name in ("key", "key_in_query", "bearer", "agent"):
        assert by_target.get(name) and all(s["outcome"] == "ok" for s in by_target[name]), (name, by_target.get(name))
    wrong = by_target["wrong"]
    assert wrong and all(s["outcome"] == "rejected" and s["http_status"] == 401 for s in wrong), wrong
    assert all("authentication failed (HTTP 401)" in s["error"] for s in wrong), wrong[0]["error"]
    assert runs["sim_stats"]["rejected"].get("401", 0) >= len(wrong)
    probe = runs["results"]["probe"]
    assert probe["rc"] == 1 and "authentication failed (HTTP 401)" in probe["stdout"], probe


def test_the_locust_run_worked(runs):
    loc = runs["results"]["locust"]
    assert loc["rc"] in (0, 1), loc["stderr"][-3000:]  # 1: Locust's exit code when a request failed (the 401)
    sessions = list(read_records(runs["tmp"] / "locust-out" / "sessions.jsonl"))
    assert any(s["outcome"] == "ok" for s in sessions) and any(s["outcome"] == "rejected" for s in sessions)


def test_no_secret_in_any_file_written(runs):
    leaks, searched = [], 0
    for path in sorted(runs["tmp"].rglob("*")):
        if path.is_file():
            searched += 1
            leaks += _leaks(path.read_bytes().decode("utf-8", "replace"), str(path.relative_to(runs["tmp"])))
    assert searched >= 15, searched  # records, reports, CSVs, HTML, truth, simulator log were all there
    for must in ("run/turns.jsonl", "run/sessions.jsonl", "run/run.json", "run/report.html", "loc.html",
                 "loc_stats.csv", "simulator.log", "truth.jsonl", "locust-out/sessions.jsonl"):
        assert (runs["tmp"] / must).exists(), must
    assert "'api-key': '***'" in (runs["tmp"] / "simulator.log").read_text()  # it saw the query, masked
    assert not leaks, leaks


@pytest.mark.parametrize("name", ["run", "locust", "probe"])
def test_no_secret_in_anything_printed(runs, name):
    r = runs["results"][name]
    assert r["stdout"] or r["stderr"]
    assert not _leaks(r["stdout"], f"{name} stdout") + _leaks(r["stderr"], f"{name} stderr")


def test_a_missing_credential_is_refused_before_load(runs, tmp_path):
    """The key variable is unset: exit 2 naming the variable and the target, no session, no secret."""
    env = _env()
    del env["VL_TEST_KEY"]
    run = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(runs["tmp"] / "secrets.yaml"), "--out",
                          str(tmp_path / "out"), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2, run.stderr
    assert "error: target 'key': environment variable VL_TEST_KEY is not set (target.auth.api_key_env)" in run.stderr
    assert not (tmp_path / "out").exists()  # refused before the output directory, the simulators, the load
    assert not _leaks(run.stdout + run.stderr, "missing-credential output")
