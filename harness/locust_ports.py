"""The ports a Locust process actually listens on, announced once bound.

With ``--web-port 0`` or ``--master-bind-port 0`` the OS picks a free port, but Locust logs the
number it was given (``:0``), so nobody could reach the UI or join the master. These lines name the
bound port; scripts (and our tests, which must not guess a free port and race for it) read them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent

log = logging.getLogger("voiceload")

#: How long the web UI may take to bind before we stop waiting to announce it.
_WEB_BIND_WAIT_S = 60.0


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def announce_master(runner: Any, bind_host: str) -> None:
    """The master's worker port (bound when the runner was made, before ``init``)."""
    host = "0.0.0.0" if bind_host in ("*", "") else bind_host
    log.info("voiceload: master listening for workers on %s", _hostport(host, runner.server.port))


def announce_web_ui(web_ui: Any) -> None:
    """The web UI's address once its server accepts connections (it binds in a greenlet after ``init``)."""
    def watch() -> None:
        deadline = time.monotonic() + _WEB_BIND_WAIT_S
        while time.monotonic() < deadline:
            server = web_ui.server
            if server is not None and server.started:
                scheme = "https" if web_ui.tls_cert and web_ui.tls_key else "http"
                log.info("voiceload: web UI listening on %s://%s", scheme,
                         _hostport(server.server_host, server.server_port))
                return
            gevent.sleep(0.02)

    gevent.spawn(watch)
