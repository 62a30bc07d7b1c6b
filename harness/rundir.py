"""A run's output directory: created and proven writable before load starts, filled incrementally.

Layout: ``turns.jsonl`` and ``sessions.jsonl`` (appended and flushed per record), ``run.json``
(rewritten at start and end), then ``turns.csv``, ``summary.csv`` and ``report.html`` at the end.
Both the engine runner and the Locust master write through this one class.

If the disk fills (or the directory goes away) mid-run, nothing raises into the load generator:
the first failure is kept in ``write_error``, ``on_write_error`` is called once (the CLI stops the
run with it), later records are counted in ``lost`` and ``finish()`` closes what it can.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from . import redaction
from .records import RecordWriter, SessionRecord, TurnRecord

DEFAULT_ROOT = "reports"
MIN_FREE_BYTES = 50 * 1024 * 1024


class OutputError(RuntimeError):
    """The output directory cannot hold a run: raised before any load starts."""


def new_run_id(scenario_name: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{scenario_name}-{os.getpid() % 10000:04d}"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("voiceload", "locust", "websockets", "gevent", "numpy", "pandas", "azure-identity"):
        try:
            from importlib.metadata import version

            out[name] = version(name)
        except Exception:
            out[name] = "not installed"
    return out


class RunOutput:
    def __init__(self, scenario: Any, *, out_dir: str | os.PathLike[str] | None = None, run_id: str | None = None,
                 targets: list[dict[str, str]] | None = None, extra: dict[str, Any] | None = None):
        self.run_id = run_id or new_run_id(scenario.name)
        self.dir = Path(out_dir) if out_dir else Path(DEFAULT_ROOT) / self.run_id
        self._check_writable()
        self.meta: dict[str, Any] = {
            "run_id": self.run_id, "scenario": scenario.name, "scenario_file": scenario.file,
            "description": scenario.description,
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "ended": None,
            "host": socket.gethostname(), "cpu_count": os.cpu_count(), "versions": versions(),
            "targets": targets or [], "load": _load_dict(scenario.load), "thresholds": list(scenario.thresholds),
            "argv": [redaction.redact(a) for a in sys.argv], "self_check": {}, "notes": [],
        }
        if extra:
            self.meta.update(extra)
        self._write_meta()
        self.turns = RecordWriter(self.dir / "turns.jsonl")
        self.sessions = RecordWriter(self.dir / "sessions.jsonl")
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.finished = False
        self.write_error: str | None = None
        self.lost = {"turns": 0, "sessions": 0}
        self.on_write_error: Callable[[str], None] | None = None

    def begin(self, load: dict[str, Any] | None = None) -> None:
        """The load starts now (a Locust web UI test starts long after its directory was made);
        ``load`` is what actually runs (flags and form values), recorded over the scenario's."""
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.meta["started"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.meta["load"].update({k: v for k, v in (load or {}).items() if v is not None})
        self._write_meta()

    def _check_writable(self) -> None:
        if self.dir.exists() and not self.dir.is_dir():
            raise OutputError(f"output directory {self.dir} exists and is not a directory")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_bytes(b"x" * 4096)
            probe.unlink()
        except OSError as exc:
            raise OutputError(f"output directory {self.dir} is not writable: {exc.strerror or exc}") from None
        try:
            free = os.statvfs(self.dir).f_bavail * os.statvfs(self.dir).f_frsize
        except (OSError, AttributeError):
            return
        if free < MIN_FREE_BYTES:
            raise OutputError(f"output directory {self.dir} has only {free // (1024 * 1024)} MiB free; "
                              f"a run needs at least {MIN_FREE_BYTES // (1024 * 1024)} MiB")

    def add_turn(self, rec: TurnRecord | dict[str, Any]) -> None:
        data = rec if isinstance(rec, dict) else rec.to_dict()
        for key in ("error", "input_transcript", "response_transcript"):
            if isinstance(data.get(key), str) and data[key]:
                data[key] = redaction.redact(data[key])
        self._write(self.turns, data, "turns")

    def add_session(self, rec: SessionRecord | dict[str, Any]) -> None:
        data = rec if isinstance(rec, dict) else rec.to_dict()
        if isinstance(data.get("error"), str) and data["error"]:
            data["error"] = redaction.redact(data["error"])
        self._write(self.sessions, data, "sessions")

    def _write(self, writer: RecordWriter, data: dict[str, Any], kind: str) -> None:
        if self.write_error is None:
            try:
                writer.write(data)
                return
            except OSError as exc:
                self._failed(writer.path, exc)
        self.lost[kind] += 1

    def _failed(self, path: Path, exc: OSError) -> None:
        if self.write_error is None:
            self.write_error = f"cannot write {path}: {exc.strerror or exc}"
            if self.on_write_error is not None:
                self.on_write_error(self.write_error)

    def note(self, text: str) -> None:
        self.meta["notes"].append(redaction.redact(text))

    def save_meta(self) -> None:
        """Rewrite run.json after ``finish`` (e.g. with the verdict); a failure is recorded, not raised."""
        try:
            self._write_meta()
        except OSError as exc:
            self._failed(self.dir / "run.json", exc)

    def _write_meta(self) -> None:
        tmp = self.dir / "run.json.tmp"
        tmp.write_text(json.dumps(self.meta, indent=2, default=str), encoding="utf-8")
        tmp.replace(self.dir / "run.json")

    def finish(self, *, self_check: dict[str, Any] | None = None, write_report: bool = True) -> dict[str, Path]:
        """Close the record files and write run.json, tables and report.html. Idempotent."""
        if self.finished:
            return {}
        self.finished = True
        for writer in (self.turns, self.sessions):
            try:
                writer.close()
            except OSError as exc:
                self._failed(writer.path, exc)
                with contextlib.suppress(OSError):
                    writer._fh.close()  # flush failed: release the descriptor anyway
        self.meta["ended"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.meta["duration_s"] = round(time.monotonic() - self.t0, 1)
        self.meta["records"] = {"turns": self.turns.count, "sessions": self.sessions.count}
        if self_check:
            self.meta["self_check"].update(self_check)
        if self.write_error is not None:
            self.meta["write_error"] = self.write_error
            self.meta["records_lost"] = dict(self.lost)
        try:
            self._write_meta()
        except OSError as exc:
            self._failed(self.dir / "run.json", exc)
            with contextlib.suppress(OSError):
                (self.dir / "run.json.tmp").unlink()
        if not write_report or self.write_error is not None:
            return {}  # `voiceload report DIR` rebuilds the tables once there is room again
        from .report.html import write_all

        return write_all(self.dir)


def _load_dict(load: Any) -> dict[str, Any]:
    return {"users": load.users, "spawn_rate": load.spawn_rate, "duration_s": load.duration_s,
            "sessions_per_user": load.sessions_per_user, "shape": load.shape.type, **load.shape.params}
