"""`voiceload init` writes starters that validate as written, offline and against a real endpoint.

The end-to-end run of a starter from an installed wheel is in tests/test_packaging.py; here every
mode x use case goes through the CLI's validate in-process (cheap), with and without VOICELOAD_ENDPOINT.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from harness import cli, scenario_schema
from harness.scenario import load_scenario
from harness.starter import MODES, USE_CASES


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("use_case", USE_CASES)
def test_every_starter_validates_offline_and_against_an_endpoint(tmp_path, capsys, monkeypatch, mode, use_case):
    path = tmp_path / "sub" / "v.yaml"
    assert cli.main(["init", "--mode", mode, "--use-case", use_case, str(path)]) == 0
    assert cli.main(["validate", str(path)]) == 0, capsys.readouterr().err
    text = path.read_text()
    assert f"starter scenario: {use_case}, {mode} mode" in text
    # the editor line points at the installed schema, and the starter passes that schema
    assert text.splitlines()[0] == f"# yaml-language-server: $schema={scenario_schema.SHIPPED.as_uri()}"
    schema = json.loads(scenario_schema.SHIPPED.read_text(encoding="utf-8"))
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(text)))
    offline = load_scenario(path)
    assert offline.targets[0].embedded and offline.conversation
    monkeypatch.setenv("VOICELOAD_ENDPOINT", "https://example.services.ai.azure.com")
    real = load_scenario(path).targets[0]
    assert not real.embedded and real.target is not None
    assert real.target.mode.startswith("agent") if mode == "agent" else real.target.model == "gpt-realtime"


def test_init_into_a_directory_and_refusing_to_overwrite(tmp_path, capsys):
    assert cli.main(["init", str(tmp_path)]) == 0
    written = tmp_path / "voiceload.yaml"
    assert written.is_file() and f"wrote {written}" in capsys.readouterr().out
    written.write_text("mine\n")
    assert cli.main(["init", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err and written.read_text() == "mine\n"
    assert cli.main(["init", "--force", "--use-case", "automotive", str(tmp_path)]) == 0
    assert "automotive" in written.read_text()
