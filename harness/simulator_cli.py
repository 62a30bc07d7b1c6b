"""The simulator's command-line options, declared once for ``voiceload simulate`` and ``python -m harness.simulator``.

Outside the ``harness.simulator`` package on purpose: declaring the options must not import asyncio
and websockets, because ``voiceload`` builds every subparser before ``voiceload run`` monkey-patches
gevent.
"""

from __future__ import annotations

import argparse

DESCRIPTION = "Run the Voice Live simulator until SIGINT/SIGTERM."


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--profile", default=None,
                   help="ideal|realistic|degraded|chaos or a YAML file (default: realistic)")
    p.add_argument("--truth-log", default=None, help="ground-truth JSONL, one line per response")
    p.add_argument("--seed", type=int, default=None, help="overrides the profile's seed")
    p.add_argument("--overrides", default=None, help="JSON object merged over the profile (dotted keys allowed)")
    p.add_argument("--stats-file", default=None, help="write final stats JSON here on shutdown")
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU (benchmarks)")
    p.add_argument("--exit-with-parent", action="store_true", help="stop when the parent process dies")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--fixtures-dir", action="append", default=[], metavar="DIR",
                   help="another fixture directory to recognise (e.g. a speech cache of say: lines); repeatable")
    t = p.add_argument_group("TLS (serve wss://)")
    t.add_argument("--tls-cert", default=None, help="PEM certificate chain of the server")
    t.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    t.add_argument("--tls-self-signed", action="store_true",
                   help="generate a local CA and a loopback certificate at start; prints the CA file to trust")
    t.add_argument("--tls-dir", default=None, help="where --tls-self-signed writes its files (default: a temp dir)")
    return p
