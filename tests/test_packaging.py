"""voiceload works outside the repository: a built wheel in a fresh venv, run from an unrelated directory.

The wheel is built once per module from a copy of the sources (pip wheel, no build isolation, so no
download). The venv reaches the test venv's installed dependencies through a .pth line, the wheel
goes in with --no-deps, and ``pip check`` proves the declared dependencies are satisfied. Every
command then runs as a subprocess from a temp directory with no repository in sight.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")
TREES = ("harness", "audio_fixtures", "scenarios")


def _pip(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, venv python, venv bin dir) with voiceload installed from the wheel."""
    base = tmp_path_factory.mktemp("pkg")
    src = base / "src"
    src.mkdir()
    for f in SOURCES:
        shutil.copy(ROOT / f, src / f)
    for d in TREES:
        shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_shipped"))
    built = _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(src), "-w", str(base / "dist"))
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (base / "dist").glob("voiceload-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies come from the test venv; the wheel's own files shadow nothing of the repo
    (Path(purelib) / "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = _pip("--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel))
    assert inst.returncode == 0, inst.stderr[-3000:]
    check = _pip("--python", str(py), "check")
    assert check.returncode == 0, check.stdout + check.stderr
    return wheel, py, venv / "bin"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICELOAD_", "PYTHONPATH"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _passed_or_only_overloaded(rc: int, out: Path, stderr: str) -> None:
    """Exit 0, or 3 when the generator's honest self-check flagged every reason as overload on a machine
    busy with other work (its timing is tested elsewhere; here the data must be complete either way)."""
    if rc == 0:
        return
    verdict = json.loads((out / "run.json").read_text()).get("verdict") or {}
    reasons = verdict.get("reasons") or []
    assert rc == 3 and reasons and all("overloaded" in r for r in reasons), (rc, verdict, stderr[-3000:])


def test_wheel_carries_the_fixture_library_profiles_scenarios_and_locust_file(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    manifest = yaml.safe_load((ROOT / "audio_fixtures" / "manifest.yaml").read_text())
    for fx in manifest["fixtures"]:
        assert f"harness/_shipped/audio_fixtures/{fx['file']}" in names, fx["file"]
    assert "harness/_shipped/audio_fixtures/manifest.yaml" in names
    for p in (ROOT / "scenarios" / "profiles").glob("*.yaml"):
        assert f"harness/_shipped/profiles/{p.name}" in names
    for p in (ROOT / "scenarios").glob("*.yaml"):
        assert f"harness/_shipped/scenarios/{p.name}" in names
    assert "harness/locustfile.py" in names and "harness/simulator/replies/replies.yaml" in names
    assert "harness/scenario.schema.json" in names


def test_installed_init_validate_and_run_from_an_unrelated_directory(installed, tmp_path):
    _, py, bin_dir = installed
    where = _run([str(py), "-c", "import harness; print(harness.__file__)"], tmp_path)
    assert where.stdout.startswith(str(bin_dir.parent)), where.stdout  # the wheel's copy, not the repo
    vl = str(bin_dir / "voiceload")
    init = _run([vl, "init", "--use-case", "tutor"], tmp_path)
    assert init.returncode == 0, init.stderr
    assert (tmp_path / "voiceload.yaml").is_file() and "voiceload.yaml" in init.stdout
    schema_line = (tmp_path / "voiceload.yaml").read_text().splitlines()[0]  # the installed schema, for editors
    uri = schema_line.removeprefix("# yaml-language-server: $schema=")
    assert uri.startswith("file://") and Path(uri.removeprefix("file://")).is_file(), schema_line
    assert Path(uri.removeprefix("file://")).is_relative_to(bin_dir.parent)
    again = _run([vl, "init", "--use-case", "tutor"], tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr  # never overwrites silently
    val = _run([vl, "validate", "voiceload.yaml"], tmp_path)
    assert val.returncode == 0, val.stderr
    run = _run([vl, "run", "voiceload.yaml", "--duration", "8s", "--users", "1", "--sessions-per-user", "1",
                "--profile", "ideal", "--out", "out", "--quiet"], tmp_path)
    _passed_or_only_overloaded(run.returncode, tmp_path / "out", run.stderr)
    turns = [json.loads(line) for line in (tmp_path / "out" / "turns.jsonl").read_text().splitlines()]
    assert [t["fixture"] for t in turns] == ["tutor_en_restaurant", "tutor_es_greeting"]
    # the simulator process recognised the shipped fixtures: transcripts and WER as in the repository
    assert all(t["complete"] and t["wer"] == 0.0 for t in turns), turns
    assert turns[0]["input_transcript"] == "Can we practice ordering food at a restaurant?"
    assert (tmp_path / "out" / "report.html").is_file()
    # the simulator process wrote its ground truth into the run directory, not into the installed package
    assert (tmp_path / "out" / "truth-embedded.jsonl").is_file()
    assert not list((bin_dir.parent / "lib").rglob("truth-*.jsonl"))


def test_user_fixtures_live_beside_the_scenario_over_the_shipped_library(installed, tmp_path):
    _, py, bin_dir = installed
    vl = str(bin_dir / "voiceload")
    shutil.copy(ROOT / "audio_fixtures" / "car_eta.wav", tmp_path / "my_eta.wav")
    add = _run([vl, "fixtures", "add", "my_eta.wav", "--text", "How long until we get there?"], tmp_path)
    assert add.returncode == 0, add.stderr
    assert (tmp_path / "audio_fixtures" / "my_eta.wav").is_file()  # in the user's directory, not the package
    shipped = bin_dir.parent / "lib"
    assert not list(shipped.rglob("_shipped/audio_fixtures/my_eta.wav"))
    project = tmp_path / "project"
    project.mkdir()
    shutil.move(tmp_path / "audio_fixtures", project / "audio_fixtures")
    (project / "s.yaml").write_text("conversation: [my_eta, cs_order_status]\nload: {users: 1, duration: 5s}\n")
    val = _run([vl, "validate", str(project / "s.yaml")], tmp_path)  # from another directory
    assert val.returncode == 0, val.stderr
    listed = _run([vl, "fixtures", "list", "--dir", str(project / "audio_fixtures")], tmp_path)
    assert "my_eta" in listed.stdout and "cs_order_status" in listed.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("conversation: [my_eta]\n")  # no fixtures beside this one: the id is unknown
    refused = _run([vl, "validate", str(bad)], tmp_path)
    assert refused.returncode == 2 and f"{bad}: conversation[0].fixture: unknown fixture 'my_eta'" in refused.stderr


def test_locust_runs_the_installed_locust_file(installed, tmp_path):
    _, py, bin_dir = installed
    path = _run([str(bin_dir / "voiceload"), "locustfile"], tmp_path).stdout.strip()
    assert Path(path).is_file() and Path(path).is_relative_to(bin_dir.parent), path
    (tmp_path / "one.yaml").write_text("target: {embedded: true, profile: ideal}\nconversation: [car_call_mom]\n"
                                       "session: {input_audio_transcription: {model: azure-speech}}\n"
                                       "load: {stop_timeout: 10s, max_pacing_lag_ms: 5000}\n")  # not a timing test
    run = _run([str(py), "-m", "locust", "-f", path, "--headless", "--scenario", "one.yaml", "-u", "1",
                "-r", "1", "-t", "6s", "--voiceload-out", "out", "--only-summary"], tmp_path, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    turns = [json.loads(line) for line in (tmp_path / "out" / "turns.jsonl").read_text().splitlines()]
    assert turns and all(t["fixture"] == "car_call_mom" for t in turns), turns
    done = [t for t in turns if t["complete"]]  # a session cut by the stop may leave one turn incomplete
    assert done and all(t["wer"] == 0.0 for t in done), turns


def test_a_scenario_speaks_its_own_fixtures_and_the_shipped_ones(tmp_path):
    """Frames come from the scenario's fixtures_dir (before: always the default directory, so a user's
    fixture validated and then failed with KeyError when the session built its frames)."""
    from harness import audio, fixtures
    from harness.client.session import prepare
    from harness.scenario import load_scenario

    fixtures.add_fixture(ROOT / "audio_fixtures" / "car_eta.wav", "How long until we get there?",
                         fixture_id="my_eta", directory=tmp_path / "audio_fixtures")
    sc_path = tmp_path / "s.yaml"
    sc_path.write_text("conversation: [my_eta, cs_order_status]\n")
    sc = load_scenario(sc_path)
    assert Path(sc.fixtures_dir) == tmp_path / "audio_fixtures"  # beside the scenario, whatever the cwd
    prepare(sc)
    pcm16 = audio.input_format("pcm16")
    mine = fixtures.frames("my_eta", pcm16, directory=sc.fixtures_dir)
    shipped = fixtures.frames("cs_order_status", pcm16, directory=sc.fixtures_dir)
    assert mine.duration_ms == fixtures.get_fixture("car_eta").duration_ms
    assert shipped.duration_ms == fixtures.get_fixture("cs_order_status").duration_ms
    assert fixtures.get_fixture("my_eta", sc.fixtures_dir).directory == (tmp_path / "audio_fixtures").resolve()


def test_a_profile_file_beside_the_scenario_is_found_from_any_directory(tmp_path, monkeypatch):
    from harness.scenario import load_scenario

    project = tmp_path / "project"
    project.mkdir()
    (project / "mine.yaml").write_text("replies: [cs_refund]\n")
    (project / "s.yaml").write_text("targets:\n  - {embedded: true, name: a, profile: mine.yaml}\n"
                                    "  - {embedded: true, name: b, profile: ideal}\n  - {embedded: true, name: c, "
                                    "profile: other.yaml}\nconversation: [car_call_mom]\n")
    monkeypatch.chdir(tmp_path)
    a, b, c = load_scenario(project / "s.yaml").targets
    assert a.profile == str(project / "mine.yaml")  # beside the scenario, not the working directory
    assert b.profile == "ideal" and c.profile == "other.yaml"  # a shipped name; a file that is not beside it
