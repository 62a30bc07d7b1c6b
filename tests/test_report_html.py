"""report.html: structure, self-containment, size, and a real render in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.records import RecordWriter, SessionRecord, TurnRecord
from harness.report.html import write_all, write_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
PLOTS = ("compare-bars", "cdf", "histogram", "concurrency", "over-time", "reasons", "waterfall")
SCREENSHOT_DIR = Path(__file__).resolve().parent.parent / "reports" / "screenshots"


def make_run(run_dir: Path, n: int = 300, targets: tuple[str, ...] = ("eastus2", "swedencentral"),
             seed: int = 1, meta: dict | None = None) -> Path:
    """A synthetic run: lognormal latencies, a load ramp, failures, invalid turns, rejections."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = 1_795_000_000.0
    reasons = ["timeout", "no_response", "disconnected", "cancelled", "error"]
    with RecordWriter(run_dir / "turns.jsonl") as w:
        for i in range(n):
            tgt = targets[i % len(targets)]
            k = targets.index(tgt)
            t = i * 600.0 / n
            active = 1 + int(t / 600 * 40)
            vad = float(rng.lognormal(np.log(420 + 40 * k), 0.2))
            server = float(rng.lognormal(np.log(380 + 3 * active + 90 * k), 0.3))
            fail = rng.random() < 0.06
            reason = str(rng.choice(reasons)) if fail else "complete"
            fa = None if reason in ("timeout", "no_response", "disconnected") else vad + server
            marks = {"utterance_start": -1800.0, "speech_end": 0.0, "speech_started": -1500.0, "speech_stopped": vad,
                     "committed": vad + 5, "transcript": vad + 120, "response_created": vad + 60}
            if fa is not None:
                marks.update(first_audio=fa, first_voiced=fa + 80, response_done=fa + 2200)
            exp_ok = rng.random() > 0.03
            w.write(TurnRecord(
                run_id="20261124-143000-smoke", scenario="smoke", target=tgt, worker="w1",
                session_id=f"s{i // 3:04d}", turn_index=i % 3, fixture=f"fx_{i % 3}",
                t_speech_end=t0 + t, active_sessions=active, first_audio_ms=fa,
                first_voiced_ms=None if fa is None else fa + 80, leading_silence_ms=80.0, vad_ms=vad,
                server_response_ms=None if fa is None else server, first_transcript_ms=vad + 120,
                response_created_ms=vad + 60, response_audio_ms=2400.0, response_wall_ms=2200.0, audio_rtf=1.09,
                wer=float(rng.choice([0.0, 0.0, 0.1, 0.25])), marks=marks, complete=not fail, reason=reason,
                error="<b>boom</b> & 'quotes'" if reason == "error" else "",
                expectations=[{"name": "response_contains:balance", "ok": exp_ok, "detail": "response='<x>'"}],
                expectations_ok=exp_ok, valid=not (200 <= i < 204), response_status="completed",
            ))
    with RecordWriter(run_dir / "sessions.jsonl") as w:
        for s in range(n // 3):
            rejected = s % 17 == 5
            w.write(SessionRecord(run_id="20261124-143000-smoke", target=targets[s % len(targets)],
                                  session_id=f"s{s:04d}", t_start=t0 + s, t_end=t0 + s + 30,
                                  outcome="rejected" if rejected else "ok", http_status=429 if rejected else None,
                                  backoff_ms=1500.0 if rejected else 0.0, connect_ms=180.0 + s % 40,
                                  turns_attempted=0 if rejected else 3, turns_recorded=0 if rejected else 3,
                                  error="HTTP 429 Too Many Requests" if rejected else ""))
    run_meta = {
        "run_id": "20261124-143000-smoke", "scenario": "smoke", "scenario_file": "scenarios/smoke.yaml",
        "started": "2026-11-24T14:30:00+00:00", "ended": "2026-11-24T14:40:05+00:00", "host": "ci-runner",
        "versions": {"python": "3.11.9", "voiceload": "0.1.0", "locust": "2.40.0", "websockets": "15.0"},
        "targets": [{"name": t, "url": f"wss://{t}.example.invalid/voice-live/realtime?api-key=***"}
                    for t in targets],
        "load": {"users": 40, "spawn_rate": 2, "duration_s": 600, "shape": "flat"},
        "thresholds": ["first_audio_ms.p95 <= 1400", "completeness >= 0.9"],
        "self_check": {"pacing_late_p50_ms": 0.4, "pacing_late_p99_ms": 3.1, "pacing_late_max_ms": 12.0,
                       "cpu_max_pct": 41.0, "invalid_turns": 4},
        "notes": ["synthetic run <for tests>"],
    }
    run_meta.update(meta or {})
    (run_dir / "run.json").write_text(json.dumps(run_meta), encoding="utf-8")
    return run_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("run") / "20261124-143000-smoke")
    return write_all(run)["report.html"]


def test_structure_and_self_contained(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    for sid in ("overview", "compare", "latency", "failures", "slowest", "expectations", "sessions", "run",
                "thresholds"):
        assert f"id='{sid}'" in text, sid
    assert "eastus2" in text and "swedencentral" in text
    assert "Load generator self-check warning" in text
    for plot in PLOTS:
        assert f"id='plot-{plot}'><svg" in text, plot
    assert text.count("<svg") == len(PLOTS)
    # No external resource of any kind: no http(s) src/href/url(), no script src, no @import.
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text, re.I)
    assert "<script" not in text.lower() and "@import" not in text
    # Data is escaped.
    assert "<b>boom</b>" not in text and "&lt;b&gt;boom&lt;/b&gt;" in text
    assert "synthetic run &lt;for tests&gt;" in text
    assert report.stat().st_size < 3 * 1024 * 1024
    for name in ("turns.csv", "summary.csv"):
        assert (report.parent / name).stat().st_size > 0


def test_zero_and_one_turn(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "turns.jsonl").write_text("")
    text = write_report(empty).read_text(encoding="utf-8")
    assert "No turns recorded" in text
    paths = write_all(empty)
    assert set(paths) == {"turns.csv", "summary.csv", "report.html"}

    one = tmp_path / "one"
    with RecordWriter(one / "turns.jsonl") as w:
        w.write(TurnRecord(target="embedded", t_speech_end=1_795_000_000.0, first_audio_ms=900.0, vad_ms=500.0,
                           server_response_ms=400.0, complete=True, reason="complete",
                           marks={"speech_end": 0.0, "speech_stopped": 500.0, "first_audio": 900.0}))
    text = write_all(one)["report.html"].read_text(encoding="utf-8")
    assert "embedded" in text and "No turns recorded" not in text and "<svg" in text


def test_many_turns_are_all_reported(tmp_path: Path) -> None:
    """20 000 turns: every one reaches turns.csv and the summary (speed is measured by bench/report_bench.py)."""
    import pandas as pd

    run = make_run(tmp_path / "big", n=20_000, seed=3)
    paths = write_all(run)
    assert len(pd.read_csv(paths["turns.csv"])) == 20_000
    summary = pd.read_csv(paths["summary.csv"])
    assert int(summary["count"].sum()) == 20_000
    assert paths["report.html"].stat().st_size > 0


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp / 'profile'}",
           "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(150)
def test_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    if not CHROMIUM:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    url = report.resolve().as_uri()
    png = tmp_path / "report.png"
    shot = _chromium([f"--screenshot={png}", "--window-size=1400,4000", "--hide-scrollbars", url], tmp_path)
    assert png.exists() and png.stat().st_size > 50_000, shot.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, SCREENSHOT_DIR / "report.png")

    dom = _chromium(["--dump-dom", "--virtual-time-budget=2000", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for plot in PLOTS:  # each plot is an <svg> element in the rendered DOM
        assert re.search(rf'<figure id="plot-{plot}"><svg[^>]*viewBox', dom.stdout), plot
    assert "swedencentral" in dom.stdout and "eastus2" in dom.stdout
    console = _console_lines(shot.stderr + dom.stderr)
    assert not console, "\n".join(console)


def _console_lines(log: str) -> list[str]:
    """Page console output as chromium logs it with --enable-logging=stderr: '...:INFO:CONSOLE:1] "msg"'."""
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line or "net::ERR" in line]


@pytest.mark.timeout(90)
def test_console_capture_detects_errors(tmp_path: Path) -> None:
    """Guards the check above: a page that does log an error must be caught by _console_lines."""
    if not CHROMIUM:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><p>x</p><script>console.error('boom-sentinel'); notDefined();</script>")
    res = _chromium(["--dump-dom", bad.as_uri()], tmp_path)
    lines = _console_lines(res.stderr)
    assert any("boom-sentinel" in x for x in lines) and any("Uncaught" in x for x in lines), res.stderr[-2000:]
