"""Azure Load Testing entry point: finds the voiceload bundle, then runs harness/locustfile.py.

Azure Load Testing (ALT) puts every uploaded file in ONE folder next to the test script, so the
harness package, scenarios and audio fixtures travel as a zip artifact (voiceload-bundle.zip,
built by build_bundle.py) that keeps their layout. ALT does not document whether a zip artifact
arrives extracted, so both cases are handled: a ``harness/`` folder next to this file (or one
level below) is used as is, otherwise the zip is extracted to a temporary folder.

ALT documents no way to collect arbitrary files a Locust script writes, so at the end of the run
each engine (a) logs its summary at WARNING level (ALT keeps WARN/ERROR lines in the worker logs
you can download) and (b) if ``VOICELOAD_RESULTS_SAS_URL`` is set (pass it as an ALT secret: it
is a blob container SAS URL), uploads its run directory (turns.jsonl, report.html, ...) to
``<container>/<run-id>/<engine-host>/``. Works locally too: ``locust -f azure-load-testing/voiceload_alt.py``.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import socket
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Callable, MutableMapping
from urllib.parse import quote

BUNDLE = "voiceload-bundle.zip"
MARKER = "harness/locustfile.py"
DEFAULT_SCENARIO = "scenarios/smoke.yaml"
BLOB_API_VERSION = "2021-08-06"  # Put Blob with x-ms-blob-type: BlockBlob, single request up to 5000 MiB
log = logging.getLogger("voiceload.alt")


def find_root(here: Path) -> Path:
    """The folder that contains ``harness/``: next to this script, its parent, a subfolder, or the zip."""
    candidates = [here, here.parent, *sorted(d for d in here.iterdir() if d.is_dir())]
    for cand in candidates:
        if (cand / MARKER).is_file():
            return cand
    for archive in sorted(here.glob("*.zip"), key=lambda p: p.name != BUNDLE):
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            if MARKER not in names:
                continue
            digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
            dest = Path(tempfile.gettempdir()) / f"voiceload-bundle-{digest}"
            if not (dest / MARKER).is_file():
                zf.extractall(dest)  # zipfile drops absolute paths and '..' parts
            return dest
    raise RuntimeError(f"voiceload bundle not found next to {here}: build it with build_bundle.py and list "
                       f"{BUNDLE} under zipArtifacts in the test configuration")


def prepare(env: MutableMapping[str, str], here: Path | None = None) -> Path:
    """Make the harness importable and point scenario/output paths at the bundle; returns its root."""
    root = find_root(here or Path(__file__).resolve().parent)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    scenario = env.get("VOICELOAD_SCENARIO") or DEFAULT_SCENARIO
    if not Path(scenario).is_absolute() and (root / scenario).is_file():  # the bundle's copy wins
        scenario = str(root / scenario)
    env["VOICELOAD_SCENARIO"] = scenario
    if not env.get("VOICELOAD_OUT"):
        base = Path(env.get("VOICELOAD_RESULTS_DIR") or (Path.cwd() if os.access(Path.cwd(), os.W_OK)
                                                          else Path(tempfile.gettempdir())) / "voiceload-results")
        env["VOICELOAD_OUT"] = str(base / f"{socket.gethostname()}-{os.getpid()}")
    return root


def blob_url(container_sas_url: str, *parts: str) -> str:
    """``https://acct.blob.core.windows.net/container/<parts...>?<sas>`` from a container SAS URL."""
    base, _, sas = container_sas_url.partition("?")
    path = "/".join(quote(p.strip("/"), safe="/") for p in parts if p)
    return f"{base.rstrip('/')}/{path}" + (f"?{sas}" if sas else "")


def upload_dir(run_dir: Path, container_sas_url: str, prefix: str, *, timeout: float = 120.0,
               opener: Callable[..., Any] = urllib.request.urlopen) -> list[str]:
    """PUT every file of ``run_dir`` as a block blob under ``prefix``; returns the blob names."""
    done = []
    for f in sorted(p for p in run_dir.iterdir() if p.is_file()):
        name = f"{prefix.strip('/')}/{f.name}"
        req = urllib.request.Request(blob_url(container_sas_url, name), data=f.read_bytes(), method="PUT",
                                     headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": BLOB_API_VERSION,
                                              "Content-Type": mimetypes.guess_type(f.name)[0]
                                              or "application/octet-stream"})
        with opener(req, timeout=timeout) as resp:
            if getattr(resp, "status", 201) >= 300:
                raise OSError(f"upload of {name} answered HTTP {resp.status}")
        done.append(name)
    return done


def publish(run_dir: Path, run_id: str, env: MutableMapping[str, str], logger: logging.Logger = log) -> None:
    """End of run on one engine: summary into the worker log, run directory to blob storage if asked."""
    host = socket.gethostname()
    summary = run_dir / "summary.csv"
    files = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    logger.warning("voiceload run %s on %s: %s in %s", run_id, host, ", ".join(files) or "no files", run_dir)
    if summary.is_file():
        for line in summary.read_text(encoding="utf-8", errors="replace").splitlines()[:60]:
            logger.warning("voiceload summary | %s", line)
    sas = env.get("VOICELOAD_RESULTS_SAS_URL", "").strip()
    if not sas or not run_dir.is_dir():
        return
    prefix = env.get("VOICELOAD_RESULTS_PREFIX") or f"{run_id}/{host}"
    try:
        names = upload_dir(run_dir, sas, prefix)
        logger.warning("voiceload uploaded %d files to %s", len(names), blob_url(sas.partition("?")[0], prefix))
    except Exception as exc:  # never fail the run over the copy; say why, without the SAS
        from harness import diagnosis

        logger.error("voiceload upload to blob storage failed: %s", diagnosis.diagnose(exc))


def _boot() -> tuple[type, type]:
    prepare(os.environ)
    from locust import events  # Locust has patched gevent already; the harness imports after it

    from harness import redaction
    from harness.locustfile import NODE, VoiceloadShape, VoiceUser  # registers voiceload's Locust hooks

    redaction.register_secret(os.environ.get("VOICELOAD_RESULTS_SAS_URL", "").partition("?")[2] or None)

    @events.quitting.add_listener  # after harness.locustfile's own quitting hook has written the report
    def _publish(environment: Any, **_kw: Any) -> None:
        out = NODE.test.output if NODE.test is not None else None  # the (headless) run's one test
        if out is not None:
            publish(Path(out.dir), out.run_id, os.environ)

    return VoiceUser, VoiceloadShape


if os.environ.get("VOICELOAD_ALT_NO_BOOT") != "1":  # tests import the helpers without starting Locust
    VoiceUser, VoiceloadShape = _boot()  # module globals: this is where Locust looks for them
