"""The current API surface (2026-07-15 and 2026-06-01-preview references): every api-version and
transcription model they name is accepted everywhere; values voiceload does not know are warned
about, never refused - by `voiceload validate` (a subprocess, as a user runs it) and by the simulator.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from harness.simulator import start_simulator
from harness.simulator.handshake import check
from harness.simulator.profiles import AuthConfig
from simclient import SimClient

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = """
name: surface
target:
  endpoint: https://my-resource.services.ai.azure.com
  api_version: {version}
  model: gpt-4.1
  auth: {{kind: api_key}}
session:
  input_audio_transcription: {{model: {model}}}
conversation:
  - fixture: car_eta
load: {{users: 1, duration: 10s}}
"""


def validate(files: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "validate", *map(str, files)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_validate_accepts_the_current_surface_and_only_warns_about_unknown_values(tmp_path):
    good = []
    for version in ("2026-07-15", "2026-06-01-preview"):
        for model in ("mai-transcribe-2", "mai-transcribe", "azure-speech"):
            good.append(tmp_path / f"{version}-{model}.yaml")
            good[-1].write_text(SCENARIO.format(version=version, model=model))
    run = validate(good)
    assert run.returncode == 0 and "warning" not in run.stderr, run.stderr
    assert run.stdout.count("✓") == len(good), run.stdout
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(SCENARIO.format(version="2026-10-01", model="my-asr"))
    run = validate([unknown])
    assert run.returncode == 0, run.stderr
    assert "target.api_version: '2026-10-01' is not a version voiceload knows" in run.stderr
    assert "session.input_audio_transcription.model: Unknown transcription model 'my-asr'" in run.stderr


@pytest.mark.parametrize("version, status", [("2026-06-01-preview", 101), ("2026-07-15", 101),
                                             ("2027-03-01", 101),  # newer than we know: never blocked
                                             ("2026-02-30", 400),  # in the known range, never existed
                                             ("latest", 400)])
def test_simulator_api_versions(version, status):
    h = check(f"/voice-live/realtime?api-version={version}&model=gpt-4.1", {}, AuthConfig())
    assert h.status == status, h.body


def test_simulator_session_fields_per_api_version_and_transcription_warning():
    async def main(url):
        out = {}
        for version in ("2025-10-01", "2026-06-01-preview", "2026-07-15"):
            c = await SimClient.open(url, api_version=version, model="gpt-4.1")
            out[version] = (await c.wait_for("session.created"))["session"]
            if version == "2026-07-15":
                ok = await c.update({"input_audio_transcription": {"model": "mai-transcribe-2"}})
                await c.update({"input_audio_transcription": {"model": "my-asr"}, "voice": "coral"})
                warning = await c.wait_for("warning")
                out["updates"] = (ok, c.of_type("session.updated")[-1], warning, c.types())
            await c.close()
        return out

    with start_simulator("ideal") as sim:
        out = asyncio.run(asyncio.wait_for(main(sim.url), 30))
    for version in ("2025-10-01", "2026-06-01-preview"):
        assert "expires_at" not in out[version] and "object" not in out[version]
        assert out[version]["agent"] is None
    new = out["2026-07-15"]
    assert new["object"] == "realtime.session" and new["expires_at"] > 0 and new["agent"] is None
    ok, updated, warning, types = out["updates"]
    assert ok["type"] == "session.updated" and ok["session"]["input_audio_transcription"]["model"] == "mai-transcribe-2"
    assert updated["session"]["input_audio_transcription"]["model"] == "my-asr" and updated["session"]["voice"] == "coral"
    assert warning["warning"]["param"] == "session.input_audio_transcription.model"
    assert "my-asr" in warning["warning"]["message"] and "error" not in types
