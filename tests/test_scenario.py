"""Scenario validation: every bad input is refused before load, naming the file, the field and why."""

from __future__ import annotations

import glob
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.scenario import ScenarioError, load_scenario
from harness.schema import parse_duration

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
name: t
target: embedded
session:
  turn_detection: {type: server_vad, silence_duration_ms: 500}
conversation:
  - fixture: cs_order_status
load:
  users: 2
  duration: 30s
"""
LOAD = "load:\n  users: 2\n  duration: 30s\n"


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def error_of(tmp_path: Path, text: str, **kw) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, **kw)
    msg = str(info.value)
    assert str(path) in msg, msg  # every message names the file
    return msg


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "scenarios" / "*.yaml"))))
def test_shipped_scenarios_are_valid(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    sc = load_scenario(path)
    assert sc.conversation and sc.targets


def test_good_minimal(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    sc = load_scenario(write(tmp_path, GOOD))
    assert sc.load.users == 2 and sc.load.duration_s == 30 and sc.targets[0].embedded


BAD = [
    ("malformed yaml", "name: [unclosed\n", "invalid YAML: line"),
    ("not a mapping", "- a\n- b\n", "expected a mapping at the top level"),
    ("unknown top-level field", GOOD + "lod: {}\n", "lod: unknown field"),
    ("misspelled field hint", GOOD.replace("load:", "laod:"), "did you mean 'load'"),
    ("missing conversation", "name: t\ntarget: embedded\n", "conversation: at least one turn is required"),
    ("unknown fixture", GOOD.replace("cs_order_status", "nope_fixture"), "conversation[0].fixture: unknown fixture 'nope_fixture'"),
    ("turn without fixture", GOOD.replace("- fixture: cs_order_status", "- pause_ms: 10"), "conversation[0].fixture: required"),
    ("users wrong type", GOOD.replace("users: 2", "users: ten"), "load.users: expected an integer, got 'ten'"),
    ("absurd users", GOOD.replace("users: 2", "users: 5000000"), "load.users: must be ≤ 20000"),
    ("zero users", GOOD.replace("users: 2", "users: 0"), "load.users: must be ≥ 1"),
    ("bad duration", GOOD.replace("duration: 30s", "duration: soon"), "load.duration: expected a duration"),
    ("chunk not multiple of 10", GOOD + "audio: {chunk_ms: 25}\n", "audio.chunk_ms: must be a multiple of 10"),
    ("chunk out of range", GOOD + "audio: {chunk_ms: 5000}\n", "audio.chunk_ms: must be ≤ 200"),
    ("bad drop rate", GOOD + "audio: {perturb: {drop_rate: 0.9}}\n", "audio.perturb.drop_rate: must be ≤ 0.5"),
    ("threshold syntax", GOOD + "thresholds: ['first_audio_ms.p95 is small']\n", "thresholds[0]"),
    ("threshold not string", GOOD + "thresholds: [42]\n", "thresholds[0]: expected a string"),
    ("manual commit with VAD", GOOD.replace("- fixture: cs_order_status", "- {fixture: cs_order_status, manual_commit: true}"),
     "conversation[0].manual_commit: needs session.turn_detection: null"),
    ("barge-in on first turn", GOOD.replace("- fixture: cs_order_status", "- {fixture: cs_order_status, barge_in_after_ms: 100}"),
     "conversation[0].barge_in_after_ms: the first turn has no previous response"),
    ("bad shape", GOOD.replace(LOAD, "load: {users: 2, shape: {type: zigzag}}\n"),
     "load.shape.type: expected one of"),
    ("breakpoint without hold", GOOD.replace(LOAD, "load: {shape: {type: breakpoint}}\n"),
     "load.shape.hold"),
    ("unknown env var", GOOD.replace("users: 2", "users: ${VOICELOAD_TEST_UNSET_VAR}"),
     "environment variable VOICELOAD_TEST_UNSET_VAR is not set"),
    ("target without endpoint", GOOD.replace("target: embedded", "target: {model: gpt-realtime}"),
     "target.endpoint: required"),
    ("both target and targets", GOOD + "targets: [embedded]\n", "targets: give either target or targets"),
    ("duplicate target names", GOOD.replace("target: embedded", "targets: [{embedded: true, name: a}, {embedded: true, name: a}]"),
     "targets[1].name: duplicate target name 'a'"),
    ("bad expectation reason", GOOD.replace("- fixture: cs_order_status", "- {fixture: cs_order_status, expect: {reason: great}}"),
     "conversation[0].expect.reason: expected one of"),
    ("bad session threshold", GOOD.replace("silence_duration_ms: 500}", "silence_duration_ms: 500, threshold: 3}"),
     "session.turn_detection.threshold"),
    ("bad VAD type", GOOD.replace("type: server_vad", "type: shouty_vad"), "session.turn_detection.type"),
]


@pytest.mark.parametrize("label,text,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_scenarios_are_refused_with_field_path(tmp_path, monkeypatch, label, text, expected):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("VOICELOAD_TEST_UNSET_VAR", raising=False)
    msg = error_of(tmp_path, text)
    assert expected in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read file"):
        load_scenario(tmp_path / "nope.yaml")


def test_all_problems_are_reported_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    msg = error_of(tmp_path, GOOD.replace("users: 2", "users: -1").replace("cs_order_status", "zz") + "extra: 1\n")
    assert "load.users" in msg and "conversation[0].fixture" in msg and "extra: unknown field" in msg


def test_interpolation_uses_environment_and_defaults_only(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("VL_USERS", "4")
    text = GOOD.replace("users: 2", "users: ${VL_USERS}").replace("duration: 30s", "duration: ${VL_DUR:-45s}")
    sc = load_scenario(write(tmp_path, text))
    assert sc.load.users == 4 and sc.load.duration_s == 45
    # No YAML tags, no code: safe_load refuses python objects.
    msg = error_of(tmp_path, GOOD + "x: !!python/object/apply:os.system ['echo hi']\n")
    assert "invalid YAML" in msg


def test_embedded_endpoint_keyword_keeps_target_name(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    text = GOOD.replace("target: embedded",
                        "targets:\n  - {name: eastus2, endpoint: embedded, profile: ideal}\n"
                        "  - {name: sweden, endpoint: embedded, profile: degraded}")
    sc = load_scenario(write(tmp_path, text))
    assert [(t.name, t.embedded, t.profile) for t in sc.targets] == [("eastus2", True, "ideal"),
                                                                      ("sweden", True, "degraded")]


@pytest.mark.parametrize("text,seconds", [("90", 90), (90, 90), ("90s", 90), ("5m", 300), ("1h30m", 5400),
                                          ("250ms", 0.25), ("2h", 7200)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_validate_command_exit_codes(tmp_path):
    bad = write(tmp_path, GOOD.replace("users: 2", "users: many"), "bad.yaml")
    run = subprocess.run([sys.executable, "-m", "harness.cli", "validate", "scenarios/smoke.yaml", str(bad)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "✓ scenarios/smoke.yaml" in run.stdout
    assert f"{bad}: load.users: expected an integer, got 'many'" in run.stderr
