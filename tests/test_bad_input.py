"""Bad input is refused before any load starts, naming the file, the field and the reason (exit 2).

tests/test_scenario.py already covers malformed YAML, unknown fields, misspellings, wrong types of
load values, unknown fixtures, bad shapes and thresholds; this file adds what it does not: unreadable
and hostile files, wrong section types, absurd command-line load numbers, bad --target URLs, unusable
audio behind a scenario's fixtures_dir and through `voiceload fixtures add`, and the clear-text
warning for ws:// to a remote host. `validate` and `fixtures add` run in-process through cli.main
(they do not monkey-patch); `run` runs in a subprocess when its own process is the point.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from harness import cli, redaction, run_command
from harness.fixtures import load_manifest
from harness.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
GOOD = """\
name: t
target: embedded
session:
  turn_detection: {type: server_vad, silence_duration_ms: 500}
conversation:
  - fixture: car_call_mom
load:
  users: 2
  duration: 30s
"""


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(redaction, "install_log_redaction", lambda: None)  # keep this process's logging as it is


def validate(path: Path, capsys) -> tuple[int, str, str]:
    rc = cli.main(["validate", str(path)])
    out, err = capsys.readouterr()
    return rc, out, err


def write(tmp_path: Path, text: str | bytes, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


# --- scenario files ---------------------------------------------------------------------------------------

CASES = [
    ("empty file", "", "<root>: expected a mapping at the top level, got NoneType"),
    ("section types", "name: t\nsession: 5\nconversation: {a: 1}\naudio: [1]\nload: nope\n",
     ["session: expected a mapping, got int", "conversation: expected a list, got dict",
      "audio: expected a mapping, got list", "load: expected a mapping, got str"]),
    ("float users", GOOD.replace("users: 2", "users: 2.5"), "load.users: expected an integer, got 2.5"),
    ("bool users", GOOD.replace("users: 2", "users: true"), "load.users: expected an integer, got True"),
    ("zero spawn rate", GOOD.replace("users: 2", "users: 2\n  spawn_rate: 0"), "load.spawn_rate: must be ≥ 0.01"),
    ("month-long run", GOOD.replace("duration: 30s", "duration: 720h"), "load.duration: must be ≤ 604800"),
    ("zero turn timeout", GOOD.replace("users: 2", "users: 2\n  turn_timeout: 0s"), "load.turn_timeout: must be ≥ 1"),
    ("negative reconnect margin", GOOD.replace("users: 2", "users: 2\n  reconnect_margin: -5s"),
     "load.reconnect_margin: expected a duration"),
    ("negative pause", GOOD.replace("- fixture: car_call_mom", "- {fixture: car_call_mom, pause_ms: -5}"),
     "conversation[0].pause_ms: must be ≥ 0"),
    ("absurd step shape", GOOD.replace("duration: 30s", "duration: 30s\n  shape: {type: step, start_users: 1, "
                                       "step_users: 1000000, step_every: 1s, max_users: 100000000}"),
     ["load.shape.step_users", "load.shape.max_users"]),
    ("secret in the scenario", GOOD.replace("target: embedded", "target: {endpoint: 'wss://x.example', model: m, "
                                            "auth: {kind: api_key, api_key: sk-inline-secret}}"),
     "target.auth.api_key: unknown field"),
]


@pytest.mark.parametrize("label,text,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_scenarios_are_refused_by_validate(tmp_path, capsys, label, text, expected):
    path = write(tmp_path, text)
    rc, _, err = validate(path, capsys)
    assert rc == 2
    for e in [expected] if isinstance(expected, str) else expected:
        assert f"{path}: {e}" in err, err
    assert "sk-inline-secret" not in err


def test_a_directory_is_not_a_scenario(tmp_path, capsys):
    d = tmp_path / "dir.yaml"
    d.mkdir()
    rc, _, err = validate(d, capsys)
    assert rc == 2 and f"{d}: <root>: cannot read file: Is a directory" in err


def test_a_binary_file_is_refused_not_a_traceback(tmp_path, capsys):
    path = write(tmp_path, b"\xff\xfe\x00 not text \x80\x81")
    rc, _, err = validate(path, capsys)
    assert rc == 2 and f"{path}: <root>: not UTF-8 text" in err


@pytest.mark.timeout(20)  # a safety net: the refusal itself is what proves the guard ran before any walk
def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    levels = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 7)]
    path = write(tmp_path, GOOD + "x:\n" + "\n".join("  " + ln for ln in levels) + "\n")
    with pytest.raises(ValueError) as info:
        load_scenario(path)
    # Refused by the size guard before anything walks the 10**7 expanded values (seconds and ~1 GB unguarded):
    # no wall-clock bound here, the message says which rule refused it.
    assert "too large: more than 100000 values once YAML aliases are expanded" in str(info.value)


def test_credentials_in_the_endpoint_url_are_refused(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("target: embedded", "target: {endpoint: 'wss://me:sk-userinfo-secret@x."
                                                           "example', model: m, auth: {kind: entra}}"))
    rc, _, err = validate(path, capsys)
    assert rc == 2 and "target.endpoint" in err and "sk-userinfo-secret" not in err


# --- command-line load numbers and --target ---------------------------------------------------------------

def _args(**kw) -> argparse.Namespace:
    base = dict(target=None, users=None, spawn_rate=None, duration=None, sessions_per_user=None, out=None,
                profile=None, seed=None, junit=None, kernel_timestamps=False, quiet=True)
    return argparse.Namespace(**{**base, **kw})


OVERRIDES = [
    ({"users": 5_000_000}, "--users: must be between 1 and 20000, got 5000000"),
    ({"users": 0}, "--users: must be between 1 and 20000, got 0"),
    ({"users": -3}, "--users: must be between 1 and 20000, got -3"),
    ({"spawn_rate": 0.0}, "--spawn-rate: must be between 0.01/s and 1000/s, got 0/s"),
    ({"spawn_rate": 1e6}, "--spawn-rate: must be between 0.01/s and 1000/s, got 1000000/s"),
    ({"duration": "0s"}, "--duration: must be between 1 s and 604800 s, got 0 s"),
    ({"duration": "100000h"}, "--duration: must be between 1 s and 604800 s, got 360000000 s"),
    ({"duration": "soon"}, "--duration: expected a duration like 60s, 5m or 1h, got 'soon'"),
    ({"sessions_per_user": 0}, "--sessions-per-user: must be between 1 and 1000000, got 0"),
    ({"target": "ftp://x.example/y"}, "--target ftp://x.example/y: scheme must be wss://, https://, ws:// or http://"),
    ({"target": "wss://x.example/?api-key=sk-VOICELOAD-in-url"}, "--target: don't put 'api-key' in the URL"),
]


@pytest.mark.parametrize("kw,expected", OVERRIDES, ids=[str(o[0]) for o in OVERRIDES])
def test_absurd_command_line_numbers_and_bad_targets_are_refused(tmp_path, capsys, monkeypatch, kw, expected):
    from harness.simulator import SimulatorProcess

    def never(*a, **k):
        raise AssertionError("load started")

    monkeypatch.setattr(SimulatorProcess, "start", never)
    sc = load_scenario(write(tmp_path, GOOD))
    out = tmp_path / "out"
    assert run_command.run_scenario(sc, _args(out=str(out), **kw)) == 2
    err = capsys.readouterr().err
    assert f"error: {expected}" in err, err
    assert "sk-VOICELOAD-in-url" not in err
    assert not out.exists()  # refused before the output directory, the simulator or any session


def test_the_real_cli_refuses_absurd_users_with_exit_2(tmp_path):
    run = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(write(tmp_path, GOOD)), "--users",
                          "5000000", "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and "error: --users: must be between 1 and 20000, got 5000000" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "out").exists()


# --- ws:// to a remote host: a warning that names the target, from validate and from run ------------------

REMOTE = GOOD.replace("target: embedded", "targets:\n  - embedded\n  - {name: remote, endpoint: "
                      "'ws://voiceload-remote.invalid:8080', model: gpt-realtime, auth: {kind: none}}")
CLEAR_TEXT = ("warning: target 'remote': target.endpoint: unencrypted ws:// to non-loopback host "
              "'voiceload-remote.invalid'")


def test_cleartext_to_a_remote_host_warns_in_validate(tmp_path, capsys):
    rc, out, err = validate(write(tmp_path, REMOTE), capsys)
    assert rc == 0 and "✓" in out
    assert CLEAR_TEXT in err, err
    assert "target 'embedded'" not in err  # the embedded simulator is loopback: no warning for it


def test_cleartext_to_a_remote_host_warns_in_run(tmp_path):
    """The host is under .invalid (RFC 2606): the warning is printed, then the run records a DNS failure."""
    path = write(tmp_path, REMOTE.replace("  - embedded\n", ""))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--users", "1", "--duration", "2s",
                          "--out", str(out), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert run.returncode == 3, run.stderr[-2000:]  # every session failed: incomplete, never a pass
    assert "VERDICT: INCOMPLETE — no data: all" in run.stdout
    assert CLEAR_TEXT in run.stderr
    assert run.stderr.index(CLEAR_TEXT) < run.stderr.index("voiceload: run")  # said before load starts
    sessions = [yaml.safe_load(ln) for ln in (out / "sessions.jsonl").read_text().splitlines()]
    assert sessions and all(s["outcome"] == "connect_error" and "cannot resolve" in s["error"] for s in sessions)


# --- audio: a scenario whose fixtures are unusable, and `voiceload fixtures add` --------------------------

def _fixture_dir(tmp_path: Path) -> Path:
    d = tmp_path / "fx"
    d.mkdir()
    shutil.copy(ROOT / "audio_fixtures" / "car_call_mom.wav", d)
    rows = [load_manifest()["car_call_mom"].to_dict()]
    (d / "manifest.yaml").write_text(yaml.safe_dump({"fixtures": rows}, sort_keys=False))
    return d


def _break(d: Path, kind: str) -> str:
    wav = d / "car_call_mom.wav"
    x, _ = sf.read(wav, dtype="int16")
    if kind == "stereo":
        sf.write(wav, np.stack([x, x], axis=1), 24000, subtype="PCM_16")
        return "fixtures[0].file: car_call_mom.wav: expected 24000 Hz mono PCM_16, got 24000 Hz, 2 channel(s), PCM_16"
    if kind == "8-bit":
        sf.write(wav, x, 24000, subtype="PCM_U8")
        return "fixtures[0].file: car_call_mom.wav: expected 24000 Hz mono PCM_16, got 24000 Hz, 1 channel(s), PCM_U8"
    if kind == "not audio":
        wav.write_text("RIFF? no, just text\n")
        return "fixtures[0].file: car_call_mom.wav: unreadable"
    if kind == "0 s":
        sf.write(wav, np.zeros(0, np.int16), 24000, subtype="PCM_16")
        return "fixtures[0].duration_ms: 1286 does not match car_call_mom.wav (0 ms)"
    if kind == "10 minutes":
        sf.write(wav, np.zeros(24000 * 600, np.int16), 24000, subtype="PCM_16")
        doc = yaml.safe_load((d / "manifest.yaml").read_text())
        doc["fixtures"][0]["duration_ms"] = 600_000
        (d / "manifest.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        return "fixtures[0].duration_ms: too long"
    raise ValueError(kind)


AUDIO = ["stereo", "8-bit", "not audio", "0 s", "10 minutes"]


@pytest.mark.parametrize("kind", AUDIO)
def test_unusable_fixture_audio_is_refused_through_the_scenario(tmp_path, capsys, kind):
    d = _fixture_dir(tmp_path)
    expected = _break(d, kind)
    path = write(tmp_path, GOOD + f"fixtures_dir: {d}\n")
    rc, _, err = validate(path, capsys)
    assert rc == 2, err
    assert f"{path}: fixtures_dir: {d.as_posix()}/manifest.yaml: {expected}" in err, err


ADD = [("not audio", "cannot read audio"), ("0 s", "empty: no samples"), ("10 minutes", "too long: 600.0 s > 60 s")]


@pytest.mark.parametrize("kind,words", ADD, ids=[a[0] for a in ADD])
def test_fixtures_add_refuses_unusable_audio(tmp_path, capsys, kind, words):
    d = _fixture_dir(tmp_path)
    before = (d / "manifest.yaml").read_bytes()
    src = tmp_path / "new.wav"
    if kind == "not audio":
        src.write_text("definitely not audio\n")
    else:
        sf.write(src, np.zeros(0 if kind == "0 s" else 8000 * 600, np.int16), 8000, subtype="PCM_16")
    rc = cli.main(["fixtures", "add", str(src), "--text", "hello", "--dir", str(d)])
    err = capsys.readouterr().err
    assert rc == 2 and f"error: {src}: {words}" in err, err
    assert (d / "manifest.yaml").read_bytes() == before and sorted(os.listdir(d)) == ["car_call_mom.wav",
                                                                                       "manifest.yaml"]


def test_fixtures_add_converts_stereo_8bit_at_another_rate(tmp_path, capsys):
    """Not every odd file is bad: `add` converts what it can (8-bit stereo 16 kHz -> 24 kHz mono PCM16)."""
    d = _fixture_dir(tmp_path)
    x, _ = sf.read(ROOT / "audio_fixtures" / "car_eta.wav", dtype="float64")
    from harness import audio

    y = audio.resample(x, 24000, 16000)
    src = tmp_path / "eta.wav"
    sf.write(src, np.stack([y, y * 0.5], axis=1), 16000, subtype="PCM_U8")
    assert cli.main(["fixtures", "add", str(src), "--text", "When do we arrive?", "--dir", str(d)]) == 0
    info = sf.info(d / "eta.wav")
    assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
    assert "eta" in load_manifest(d)
