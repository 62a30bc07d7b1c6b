"""say: lines end to end, driven as a user does: ``voiceload run`` / ``fixtures say`` / ``fixtures list``
as subprocesses, from a directory outside the repository, caches beside the scenario."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.tts.engines import piper_available

ROOT = Path(__file__).resolve().parent.parent
VOICELOAD = [sys.executable, "-m", "harness.cli"]
needs_espeak = pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng is not installed")


def voiceload(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([*VOICELOAD, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def speech_line(stderr: str) -> tuple[int, int, int, float]:
    """(from the cache, made, synthesised, seconds) from the run's speech line."""
    m = re.search(r"speech: \d+ line\(s\), (\d+) from the cache, (\d+) made from (\d+) synthesised .* in ([\d.]+) s",
                  stderr)
    assert m, stderr
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), float(m.group(4))


@pytest.mark.skipif(not piper_available(), reason="Piper (voiceload[tts]) is not installed")
def test_say_only_scenario_runs_end_to_end_and_the_second_run_uses_the_cache(tmp_path):
    scenario = tmp_path / "say_smoke.yaml"
    doc = yaml.safe_load((ROOT / "scenarios" / "say_smoke.yaml").read_text())
    doc["conversation"] = doc["conversation"][:1]  # the shipped scenario, shorter: one line, two callers
    doc["variants"] = {"channel": ["wideband", "g711"], "rate": 0.9}
    doc["load"]["max_pacing_lag_ms"] = 250  # this test is about speech, not pacing on a busy shared machine
    scenario.write_text(yaml.safe_dump(doc, sort_keys=False))
    args = ("run", str(scenario), "--users", "2", "--spawn-rate", "2", "--sessions-per-user", "1",
            "--profile", "ideal", "--duration", "5s", "--quiet")
    first = voiceload(*args, "--out", str(tmp_path / "run1"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    hits, made, synthesised, first_s = speech_line(first.stderr)
    assert (hits, made, synthesised) == (0, 2, 1)  # the line synthesised once, rendered for both callers
    cache = tmp_path / ".voiceload-cache" / "tts"
    assert len(list(cache.glob("say_*.wav"))) == 2  # beside the scenario

    turns = [json.loads(line) for line in (tmp_path / "run1" / "turns.jsonl").read_text().splitlines()]
    assert len(turns) == 2 and all(t["complete"] for t in turns)
    texts = [t["say"] for t in yaml.safe_load(scenario.read_text())["conversation"]]
    for t in turns:
        assert t["input_transcript"] == texts[t["turn_index"]] and t["wer"] == 0.0, t
        assert t["expectations_ok"] and t["fixture"].startswith("say_")
    variants = {t["variant"] for t in turns}
    assert variants == {"channel=wideband", "channel=g711"}
    assert {t["variant_fields"]["channel"] for t in turns} == {"wideband", "g711"}
    summary = pd.read_csv(tmp_path / "run1" / "summary.csv")
    assert sorted(summary["variant"]) == sorted(variants)
    assert (summary["completeness"] == 1).all() and (summary["wer_mean"] == 0).all()
    assert "By caller variant" in (tmp_path / "run1" / "report.html").read_text()

    second = voiceload(*args, "--out", str(tmp_path / "run2"), cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    hits2, made2, synthesised2, second_s = speech_line(second.stderr)
    assert (hits2, made2, synthesised2) == (2, 0, 0)  # nothing synthesised
    meta = [json.loads((tmp_path / run / "run.json").read_text())["speech"] for run in ("run1", "run2")]
    assert (meta[0]["synthesised"], meta[0]["made"], meta[1]["synthesised"], meta[1]["from_cache"]) == (1, 2, 0, 2)
    assert meta[0]["cache_dir"] == str(cache)
    assert second_s < first_s
    print(f"speech step: first run {first_s:.2f} s, cached run {second_s:.2f} s")


@needs_espeak
def test_fixtures_say_writes_a_fixture_and_list_shows_both_kinds(tmp_path):
    fx_dir = tmp_path / "fx"
    fx_dir.mkdir()
    shutil.copy(ROOT / "audio_fixtures" / "car_call_mom.wav", fx_dir)
    row = yaml.safe_load((ROOT / "audio_fixtures" / "manifest.yaml").read_text())["fixtures"]
    (fx_dir / "manifest.yaml").write_text(yaml.safe_dump({"fixtures": [r for r in row if r["id"] == "car_call_mom"]}))

    made = voiceload("fixtures", "say", "Where is my parcel?", "--voice", "espeak:en-us", "--rate", "0.9",
                     "--noise", "car", "--snr", "10", "--id", "parcel", "--dir", str(fx_dir), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "added parcel" in made.stdout and "noise=car@10dB" in made.stdout
    from harness import fixtures

    table = fixtures.load_manifest(fx_dir)
    assert set(table) == {"car_call_mom", "parcel"}
    p = table["parcel"]
    assert p.text == "Where is my parcel?" and p.snr_db == 10.0 and p.synth == "espeak:en-us rate=0.9 noise=car@10dB"
    assert (fx_dir / "parcel.wav").exists()

    dup = voiceload("fixtures", "say", "Again", "--voice", "espeak", "--id", "parcel", "--dir", str(fx_dir), cwd=tmp_path)
    assert dup.returncode == 2 and "duplicate id 'parcel'" in dup.stderr

    listed = voiceload("fixtures", "list", "--dir", str(fx_dir), "--cache", str(fx_dir / ".voiceload-cache" / "tts"),
                       cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(line.startswith("car_call_mom") and " recorded " in line for line in lines)
    assert any(line.startswith("parcel") and " synthesised " in line for line in lines)
    assert any(" cached " in line and "Where is my parcel?" in line for line in lines)


@needs_espeak
def test_bad_speech_input_is_refused_before_load(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("conversation:\n  - say: hello\n    voice: festival:kal\n  - say: ''\n"
                   "variants: {noise: [rain], rate: 9}\n")
    out = voiceload("validate", str(bad), cwd=tmp_path)
    assert out.returncode == 2
    assert "conversation[0].voice: unknown speech engine 'festival'" in out.stderr
    assert "conversation[1].say: expected the words the caller says" in out.stderr
    assert "variants.noise: expected one of none, car" in out.stderr and "variants.rate: must be ≤ 2" in out.stderr

    missing = tmp_path / "missing_voice.yaml"
    missing.write_text("target: embedded\nconversation:\n  - say: hello there\n    voice: espeak:xx-nope\n"
                       "load: {users: 1, duration: 5s}\n")
    run = voiceload("run", str(missing), "--quiet", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert run.returncode == 2 and "conversation[0].say: voice espeak:xx-nope" in run.stderr
    assert "has no voice 'xx-nope'" in run.stderr and not (tmp_path / "r" / "turns.jsonl").exists()

    azure = voiceload("fixtures", "say", "hi", "--voice", "azure:en-US-AvaMultilingualNeural", "--dir",
                      str(tmp_path / "fx"), cwd=tmp_path,
                      env={"AZURE_SPEECH_KEY": "", "AZURE_SPEECH_REGION": "", "AZURE_SPEECH_ENDPOINT": ""})
    assert azure.returncode == 2 and "AZURE_SPEECH_REGION" in azure.stderr


@needs_espeak
def test_validate_connect_synthesises_the_first_line(tmp_path):
    sc = tmp_path / "probe.yaml"
    sc.write_text("target: embedded\nspeech: {voice: 'espeak:en-us'}\n"
                  "session: {input_audio_transcription: {model: azure-speech}}\n"
                  "conversation:\n  - say: Please cancel my subscription.\n")
    out = voiceload("validate", "--connect", str(sc), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "turn complete" in out.stdout and "transcript 'Please cancel my subscription.'" in out.stdout
    assert list((tmp_path / ".voiceload-cache" / "tts").glob("say_*.wav"))
