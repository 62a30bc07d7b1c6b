"""Two ways to run the simulator beside something else: a background thread, or a child process.

``start_simulator`` (thread, own event loop) is for tests. ``SimulatorProcess`` is what the CLI
and Locust use: the simulator must never share the harness's event loop or gevent's monkey
patching, so it runs as ``python -m harness.simulator`` and the parent only reads the one
"listening" line from its stdout - with plain ``select``/``os.read`` so it works the same under
gevent (whose patched ``select`` then simply yields to other greenlets while waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from .. import interrupts
from .profiles import Profile
from .server import Simulator

READY_PREFIX = "voiceload-simulator listening on "
STATS_PREFIX = "voiceload-simulator stats "
CA_PREFIX = "voiceload-simulator CA file: "
REPO_ROOT = Path(__file__).resolve().parents[2]


class SimulatorThread:
    """A Simulator on its own event loop in a daemon thread; ``stats()`` is safe from any thread."""

    def __init__(self, profile: str | Profile | None = None, truth_log: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, overrides: dict[str, Any] | None = None, seed: int | None = None,
                 ssl_context: Any = None) -> None:
        self.simulator = Simulator(profile, truth_log=truth_log, seed=seed, host=host, port=port, overrides=overrides,
                                   ssl_context=ssl_context)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="voiceload-simulator", daemon=True)

    @property
    def url(self) -> str:
        return self.simulator.url

    @property
    def port(self) -> int:
        return self.simulator.port

    def start(self, timeout: float = 15.0) -> "SimulatorThread":
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("simulator thread did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.simulator.start()
        except BaseException as exc:  # surfaced to the caller of start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.simulator.stop()

    def stats(self) -> dict[str, Any]:
        async def snapshot() -> dict[str, Any]:
            return self.simulator.stats()

        return asyncio.run_coroutine_threadsafe(snapshot(), self.loop).result(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)


@contextlib.contextmanager
def start_simulator(profile: str | Profile | None = None, truth_log: str | None = None, host: str = "127.0.0.1",
                    port: int = 0, overrides: dict[str, Any] | None = None,
                    seed: int | None = None, ssl_context: Any = None) -> Iterator[SimulatorThread]:
    """Run a simulator in a background thread for the duration of the block (tests)."""
    handle = SimulatorThread(profile, truth_log, host, port, overrides, seed, ssl_context).start()
    try:
        yield handle
    finally:
        handle.stop()


class SimulatorProcess:
    """``python -m harness.simulator`` as a child process; context manager; gevent-safe."""

    def __init__(self, profile: str | None = None, truth_log: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, seed: int | None = None, *, overrides: dict[str, Any] | None = None,
                 stats_file: str | None = None, log_file: str | None = None, startup_timeout: float = 15.0,
                 cpu: int | None = None, tls: bool = False, fixture_dirs: tuple[str, ...] = ()) -> None:
        self.tls = tls  # serve wss:// with a fresh local CA; ca_file is what clients must trust
        self.ca_file: str | None = None
        self._tls_dir: Any = None
        self.fixture_dirs = tuple(fixture_dirs)  # extra fixture directories to recognise (speech caches)
        self.profile, self.truth_log, self.host, self.port, self.seed = profile, truth_log, host, port, seed
        self.overrides, self.stats_file, self.startup_timeout, self.cpu = overrides, stats_file, startup_timeout, cpu
        self.log_file = log_file
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.final_stats: dict[str, Any] | None = None
        self._buf = b""
        self._log_fh: Any = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "harness.simulator", "--host", self.host, "--port", str(self.port),
               "--exit-with-parent"]
        if self.profile:
            cmd += ["--profile", str(self.profile)]
        if self.truth_log:
            cmd += ["--truth-log", str(self.truth_log)]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        if self.overrides:
            cmd += ["--overrides", json.dumps(self.overrides)]
        if self.stats_file:
            cmd += ["--stats-file", str(self.stats_file)]
        if self.cpu is not None:
            cmd += ["--cpu", str(self.cpu)]
        if self.tls:
            if self._tls_dir is None:
                from ..tlsconf import self_signed

                self._tls_dir = tempfile.TemporaryDirectory(prefix="voiceload-tls-")
                files = self_signed(self._tls_dir.name)
                self.ca_file, self._tls_files = files.ca, files
            cmd += ["--tls-cert", self._tls_files.cert, "--tls-key", self._tls_files.key]
        for d in self.fixture_dirs:
            cmd += ["--fixtures-dir", str(d)]
        return cmd

    def start(self) -> "SimulatorProcess":
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        if self.log_file:
            self._log_fh = open(self.log_file, "a+b")
        else:
            self._log_fh = tempfile.TemporaryFile()
        cmd = self.command()
        try:
            # voiceload run's start-up signal (harness/interrupts.py) must not end start() between the fork
            # and storing the child's handle (gevent's Popen waits for the exec cooperatively): the child
            # would outlive us. Held, then raised by check() with the child in reach of stop().
            with interrupts.held():
                # the caller's cwd: relative --truth-log/--profile paths mean what the caller meant
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=self._log_fh, env=env, start_new_session=True)
            interrupts.check()
            line = self._read_line(self.startup_timeout)
        except BaseException:  # interrupted while it starts: stop the child (its own session: no signal reaches it)
            self.stop()
            raise
        if line is None or not line.startswith(READY_PREFIX):
            self.stop(keep_log=True)
            tail = self._log_tail()
            self._log_fh.close()
            raise RuntimeError(f"simulator did not start (got {line!r}): {tail}")
        self.url = line[len(READY_PREFIX):].strip().removesuffix("/voice-live/realtime")
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def _read_line(self, timeout: float) -> str | None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if not ready:
                if self.proc.poll() is not None:
                    return None
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", "replace")

    def _log_tail(self) -> str:
        if self._log_fh is None:
            return ""
        try:
            self._log_fh.flush()
            self._log_fh.seek(max(0, self._log_fh.tell() - 4000))
            return self._log_fh.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def stop(self, timeout: float = 10.0, keep_log: bool = False) -> None:
        proc = self.proc
        if proc is None:
            return
        with interrupts.held():  # a signal must not leave the child half-stopped (bounded: 15 s at most)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        while True:
            line = self._read_line(0.2) if proc.stdout is not None else None
            if line is None:
                break
            if line.startswith(STATS_PREFIX):
                with contextlib.suppress(ValueError):
                    self.final_stats = json.loads(line[len(STATS_PREFIX):])
        if proc.stdout is not None:
            proc.stdout.close()
        if self._log_fh is not None and not keep_log:
            self._log_fh.close()
            self._log_fh = None
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
            self._tls_dir = None

    def __enter__(self) -> "SimulatorProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
