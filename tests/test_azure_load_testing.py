"""azure-load-testing/: the test configuration uses only documented keys and ships every file it names.

DOCUMENTED_* below are copied from Microsoft Learn, "Configure a load test in YAML"
(https://learn.microsoft.com/azure/load-testing/reference-test-config-yaml; source
MicrosoftDocs/azure-docs articles/app-testing/load-testing/reference-test-config-yaml.md), plus
``keyVaultReferenceIdentity``, which that page's sample and how-to-parameterize-load-tests.md use.
"""

from __future__ import annotations

import http.server
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from ports import refused_port

ROOT = Path(__file__).resolve().parent.parent
ALT = ROOT / "azure-load-testing"
CONFIG = ALT / "voiceload-test.yaml"

DOCUMENTED_KEYS = {
    "version", "testId", "testName", "displayName", "description", "testType", "testPlan", "engineInstances",
    "configurationFiles", "failureCriteria", "autoStop", "properties", "zipArtifacts", "splitAllCSVs", "secrets",
    "env", "certificates", "appComponents", "subnetId", "publicIPDisabled", "regionalLoadTestConfig",
    "referenceIdentities", "keyVaultReferenceIdentity",
}
REQUIRED_KEYS = {"version", "testId", "testType", "testPlan", "engineInstances"}
DOCUMENTED_SUBKEYS = {
    "properties": {"userPropertyFile"},
    "secrets": {"name", "value"},
    "env": {"name", "value"},
    "certificates": {"name", "value"},
    "autoStop": {"errorPercentage", "timeWindow"},
    "regionalLoadTestConfig": {"region", "engineInstances"},
    "referenceIdentities": {"kind", "type", "value"},
}
CLIENT_CRITERION = re.compile(r"^(?:[^:]+:\s*)?(?:avg|min|max|p\d+|percentage|count)\("
                              r"(?:response_time_ms|latency|error|requests_per_sec|requests)\)\s*[<>]\s*\d+(?:\.\d+)?$")
#: Files other sessions own; the bundle and this configuration need them.
NEEDED = ["harness/locustfile.py", "scenarios/smoke.yaml", "scenarios/compare_regions.yaml",
          "audio_fixtures/manifest.yaml"]


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def alt_module():
    os.environ["VOICELOAD_ALT_NO_BOOT"] = "1"
    try:
        spec = importlib.util.spec_from_file_location("voiceload_alt_under_test", ALT / "voiceload_alt.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        os.environ.pop("VOICELOAD_ALT_NO_BOOT", None)
    return mod


@pytest.fixture(scope="module")
def builder():
    spec = importlib.util.spec_from_file_location("build_bundle_under_test", ALT / "build_bundle.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bundle(builder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "voiceload-bundle.zip"
    builder.build(out)
    return out


def test_only_documented_keys(config):
    assert set(config) <= DOCUMENTED_KEYS, set(config) - DOCUMENTED_KEYS
    assert REQUIRED_KEYS <= set(config)
    for key, allowed in DOCUMENTED_SUBKEYS.items():
        value = config.get(key)
        items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
        for item in items:
            assert set(item) <= allowed, (key, set(item) - allowed)


def test_commented_secrets_example_is_valid_too():
    text = CONFIG.read_text(encoding="utf-8")
    block = text[text.index("# secrets:"):]
    lines = [ln[2:] for ln in block.splitlines() if ln.startswith("# ")]
    secrets = yaml.safe_load("\n".join(lines))["secrets"]
    names = {s["name"] for s in secrets}
    assert names == {"AZURE_VOICELIVE_API_KEY", "VOICELOAD_RESULTS_SAS_URL"}
    for s in secrets:
        assert set(s) == {"name", "value"} and re.match(r"^https://[^/]+\.vault\.azure\.net/secrets/", s["value"])


def test_values_follow_the_reference(config):
    assert config["version"] == "v0.1"
    assert config["testType"] == "Locust"
    assert re.fullmatch(r"[a-z0-9_-]{2,50}", config["testId"])
    assert len(config.get("description", "")) <= 100
    assert isinstance(config["engineInstances"], int) and config["engineInstances"] >= 1
    criteria = config.get("failureCriteria", [])
    assert isinstance(criteria, list) and len(criteria) <= 50
    for c in criteria:
        assert CLIENT_CRITERION.match(c), c
    stop = config.get("autoStop")
    assert stop == "disable" or (0 < stop["errorPercentage"] <= 100 and stop["timeWindow"] > 0)
    assert len(config.get("zipArtifacts", [])) <= 5
    for ident in config.get("referenceIdentities", []):
        assert ident["kind"] in ("KeyVault", "Metrics", "Engine")
        assert ident["type"] in ("UserAssigned", "SystemAssigned")
        assert "value" in ident or ident["type"] == "SystemAssigned"


def test_every_listed_file_exists(config, builder):
    listed = [config["testPlan"], *config.get("configurationFiles", [])]
    if config.get("properties", {}).get("userPropertyFile"):
        listed.append(config["properties"]["userPropertyFile"])
        assert Path(listed[-1]).suffix in (".conf", ".ini", ".toml")
    for name in listed:
        assert "/" not in name, f"{name}: ALT puts every file next to the test script; use bare names"
        assert (ALT / name).is_file(), name
    assert config["testPlan"].endswith(".py")
    # the zip artifact is generated, not committed: the builder must write exactly the listed name
    assert config["zipArtifacts"] == [builder.DEFAULT_OUT.name]
    assert builder.DEFAULT_OUT.parent == ALT


@pytest.mark.parametrize("path", NEEDED)
def test_repo_files_the_bundle_needs(path):
    assert (ROOT / path).is_file(), f"{path} is missing (owned by another part of the project)"


def test_bundle_contents_and_limits(bundle, builder):
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        assert zf.testzip() is None
    for path in NEEDED:
        assert path in names
    manifest = yaml.safe_load((ROOT / "audio_fixtures/manifest.yaml").read_text(encoding="utf-8"))
    for fx in manifest["fixtures"]:
        assert f"audio_fixtures/{fx['file']}" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert {"harness/__init__.py", "harness/auth.py", "harness/protocol/endpoint.py"} <= names
    assert len(names) <= builder.MAX_FILES and bundle.stat().st_size < builder.MAX_ZIP_BYTES


def test_scenario_env_points_into_the_bundle(config, bundle):
    env = {e["name"]: str(e["value"]) for e in config["env"]}
    with zipfile.ZipFile(bundle) as zf:
        assert env["VOICELOAD_SCENARIO"] in zf.namelist()
    assert not any(k.startswith("AZURE_VOICELIVE") for k in env), "secrets belong under secrets:, not env:"


def test_requirements_match_pyproject_minus_locust():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    wanted = {re.split(r"[<>=\s]", d, maxsplit=1)[0].lower() for d in deps} - {"locust"}
    lines = [ln.split("#")[0].strip() for ln in (ALT / "requirements.txt").read_text().splitlines()]
    have = {re.split(r"[<>=\s]", ln, maxsplit=1)[0].lower() for ln in lines if ln}
    assert have == wanted


# --- the entry script ----------------------------------------------------------------------------

def test_find_root_in_a_checkout(alt_module):
    assert alt_module.find_root(ALT) == ROOT


def test_flattened_upload_with_unextracted_zip(alt_module, bundle, tmp_path, monkeypatch):
    """ALT's layout: script, requirements and the zip side by side."""
    monkeypatch.setattr(alt_module.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    shutil.copy(ALT / "voiceload_alt.py", tmp_path)
    shutil.copy(bundle, tmp_path / "voiceload-bundle.zip")
    env: dict[str, str] = {"VOICELOAD_SCENARIO": "scenarios/smoke.yaml", "VOICELOAD_RESULTS_DIR": str(tmp_path / "r")}
    root = alt_module.prepare(env, here=tmp_path)
    assert (root / "harness" / "locustfile.py").is_file() and root.parent == tmp_path / "tmp"
    assert env["VOICELOAD_SCENARIO"] == str(root / "scenarios/smoke.yaml")
    assert env["VOICELOAD_OUT"].startswith(str(tmp_path / "r"))
    assert alt_module.find_root(tmp_path) == root  # second engine process: already extracted


def test_extracted_zip_is_used_in_place(alt_module, bundle, tmp_path):
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(tmp_path / "voiceload-bundle")
    assert alt_module.find_root(tmp_path) == tmp_path / "voiceload-bundle"


def test_missing_bundle_says_what_to_do(alt_module, tmp_path):
    with pytest.raises(RuntimeError, match="build_bundle.py"):
        alt_module.find_root(tmp_path)


class _BlobServer(http.server.BaseHTTPRequestHandler):
    received: list = []
    status = 201

    def do_PUT(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def blob_server():
    _BlobServer.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _BlobServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", _BlobServer.received
    server.shutdown()


def test_publish_uploads_the_run_dir_and_logs_a_summary(alt_module, blob_server, tmp_path, caplog):
    base, received = blob_server
    run = tmp_path / "run"
    run.mkdir()
    (run / "turns.jsonl").write_text('{"turn": 1}\n')
    (run / "report.html").write_text("<html></html>")
    (run / "summary.csv").write_text("metric,p50,p95\nfirst_audio_ms,700,1200\n")
    sas = "sv=2022-11-02&sr=c&sig=SECRETSIG%3D&sp=cw"
    env = {"VOICELOAD_RESULTS_SAS_URL": f"{base}/results?{sas}"}
    with caplog.at_level(logging.WARNING, logger="voiceload.alt"):
        alt_module.publish(run, "run-42", env)
    paths = sorted(p for p, _, _ in received)
    host = alt_module.socket.gethostname()
    assert paths == sorted(f"/results/run-42/{host}/{n}?{sas}" for n in ("report.html", "summary.csv", "turns.jsonl"))
    for _, headers, _ in received:
        assert headers["x-ms-blob-type"] == "BlockBlob" and headers["x-ms-version"]
    assert "first_audio_ms,700,1200" in caplog.text and "uploaded 3 files" in caplog.text
    assert "SECRETSIG" not in caplog.text


def test_publish_failure_is_logged_without_the_sas(alt_module, tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / "turns.jsonl").write_text("{}\n")
    with refused_port() as port, caplog.at_level(logging.WARNING, logger="voiceload.alt"):
        env = {"VOICELOAD_RESULTS_SAS_URL": f"http://127.0.0.1:{port}/results?sv=1&sig=TOPSECRETSIG"}
        alt_module.publish(run, "run-1", env)  # connection refused: must not raise
    assert "upload to blob storage failed" in caplog.text and "TOPSECRETSIG" not in caplog.text


def test_locust_discovers_the_user_and_shape_in_the_alt_layout(bundle, tmp_path):
    """Locust imports the entry script the way ALT does (flattened folder, zip not extracted)."""
    shutil.copy(ALT / "voiceload_alt.py", tmp_path)
    shutil.copy(bundle, tmp_path / "voiceload-bundle.zip")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICELOAD_", "LOCUST_"))}
    env["VOICELOAD_RESULTS_DIR"] = str(tmp_path / "results")
    env["TMPDIR"] = str(tmp_path / "tmp")  # where the zip gets extracted
    (tmp_path / "tmp").mkdir()
    locust = Path(sys.executable).with_name("locust")
    res = subprocess.run([str(locust), "-f", str(tmp_path / "voiceload_alt.py"), "--list"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "VoiceUser" in res.stdout
