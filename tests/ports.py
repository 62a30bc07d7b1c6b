"""Loopback ports for tests that run beside other pytest-xdist workers, with no race for a number.

Binding port 0, closing the socket and handing its number to someone else races: between the close
and the next bind, another worker's server (or a client's ephemeral port) can take it. So:

- a child process that listens binds port 0 itself and tells us the port it got (``Child.wait_for``
  reads the line; voiceload's Locust processes announce their web UI and master port, the simulator
  prints ``listening on ws://...``);
- a port that must refuse connections is held bound but never listening (``refused_port``): the
  kernel answers a connect with a reset, and nobody else can bind it while we hold it.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

#: Lines voiceload's Locust processes log once bound (harness/locust_ports.py).
WEB_UI_LINE = r"voiceload: web UI listening on http://127\.0\.0\.1:(\d+)"
MASTER_LINE = r"voiceload: master listening for workers on 127\.0\.0\.1:(\d+)"


@contextlib.contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port on ``host`` where a connect is refused for as long as the block runs.

    The socket is bound without SO_REUSEADDR and never listens, so no other socket (not even one
    asking for address reuse) can bind the port meanwhile."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as held:
        held.bind((host, 0))
        yield held.getsockname()[1]


class Child(subprocess.Popen):
    """A child process with stdout and stderr merged into one text pipe that a thread drains, so a test
    can wait for a start-up line (``wait_for``) and still get the whole output from ``communicate``."""

    def __init__(self, argv: list[str], **kw) -> None:
        super().__init__(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
        self._lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        self._pump = threading.Thread(target=self._drain, daemon=True)
        self._pump.start()

    def _drain(self) -> None:
        for line in self.stdout:
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "".join(self._lines)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        """The first output line matching ``pattern``; fails with the output so far if the process ends
        or ``timeout`` seconds pass first."""
        rx, seen, deadline = re.compile(pattern), 0, time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    if m := rx.search(line):
                        return m
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(left)
        raise AssertionError(f"no line matching {pattern!r} within {timeout:.0f} s (exit code {self.poll()}):\n"
                             + "".join(self._lines)[-3000:])

    def port(self, pattern: str, timeout: float = 60.0) -> int:
        """The port in the first line matching ``pattern`` (its first group)."""
        return int(self.wait_for(pattern, timeout).group(1))

    def communicate(self, input=None, timeout: float | None = None) -> tuple[str, None]:  # noqa: A002
        """Wait for the exit (``subprocess.TimeoutExpired`` after ``timeout``); the whole output."""
        self.wait(timeout)
        self._pump.join(10)  # bounded: a grandchild could hold the pipe open
        return self.output, None
