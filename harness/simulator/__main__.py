"""``python -m harness.simulator``: run the Voice Live simulator until SIGINT/SIGTERM.

Prints exactly one line when ready - ``voiceload-simulator listening on ws://HOST:PORT/voice-live/realtime``
(``wss://`` with ``--tls-*``; ``--tls-self-signed`` also logs ``voiceload-simulator CA file: PATH`` to
stderr) - so a parent can parse it, and one ``voiceload-simulator stats {...}`` JSON line on shutdown.
Logs go to stderr and never contain a credential.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

from .profiles import DEFAULT_PROFILE, ProfileError
from ..simulator_cli import DESCRIPTION, add_arguments
from .runner import CA_PREFIX, READY_PREFIX, STATS_PREFIX
from .server import PATH, Simulator


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="python -m harness.simulator", description=DESCRIPTION))


async def _serve(args: argparse.Namespace, overrides: dict[str, Any] | None, tls: Any) -> dict[str, Any]:
    sim = Simulator(args.profile or DEFAULT_PROFILE, truth_log=args.truth_log, seed=args.seed, host=args.host,
                    port=args.port, overrides=overrides, ssl_context=tls,
                    extra_fixture_dirs=tuple(args.fixtures_dir))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the ready line: a parent may stop us at once
        loop.add_signal_handler(sig, stop.set)
    if args.exit_with_parent:
        loop.create_task(_watch_parent(os.getppid(), stop))
    await sim.start()
    print(f"{READY_PREFIX}{sim.url}{PATH}", flush=True)
    q = sim.profile.quotas
    if not q.unlimited:  # say so: a load test against this simulator is throttled like a real resource
        n = lambda v: "unlimited" if v is None else f"{v:g}"  # noqa: E731
        print(f"voiceload-simulator quotas (profile {sim.profile.name}): {n(q.connections_per_minute)} new connections "
              f"and {n(q.tokens_per_minute)} tokens per {q.window_s:g} s, sessions up to {n(q.max_session_minutes)} "
              """min; --overrides '{"quotas": "none"}' lifts them""", file=sys.stderr, flush=True)
    await stop.wait()
    stats = sim.stats()
    await sim.stop()
    return stats


def _tls_context(args: argparse.Namespace) -> Any:
    """The server's SSLContext, or None for plain ws://; ValueError for a bad combination or file."""
    from ..tlsconf import self_signed, server_context

    if args.tls_self_signed:
        if args.tls_cert or args.tls_key:
            raise ValueError("--tls-self-signed and --tls-cert/--tls-key exclude each other")
        import tempfile

        files = self_signed(args.tls_dir or tempfile.mkdtemp(prefix="voiceload-tls-"))
        print(f"{CA_PREFIX}{files.ca}", file=sys.stderr, flush=True)
        return server_context(files.cert, files.key)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    return server_context(args.tls_cert, args.tls_key) if args.tls_cert else None


async def _watch_parent(ppid: int, stop: asyncio.Event) -> None:
    """A parent killed with SIGKILL cannot stop us: notice that we were re-parented instead."""
    while os.getppid() == ppid:
        await asyncio.sleep(1.0)
    stop.set()


def main(argv: list[str] | None = None) -> int:
    return serve(build_parser().parse_args(argv))


def serve(args: argparse.Namespace) -> int:
    """Serve with parsed options (``voiceload simulate`` parses them with the same declaration)."""
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.getLogger().level))
    overrides = None
    if args.overrides:
        try:
            overrides = json.loads(args.overrides)
        except json.JSONDecodeError as exc:
            print(f"--overrides: invalid JSON: {exc}", file=sys.stderr)
            return 2
    try:
        tls = _tls_context(args)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop  # optional: faster loop, same behaviour

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        stats = runner(_serve(args, overrides, tls))
    except ProfileError as exc:
        print(f"profile error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    line = json.dumps(stats, separators=(",", ":"))
    if args.stats_file:
        with open(args.stats_file, "w", encoding="utf-8") as fh:
            fh.write(line + "\n")
    try:
        print(STATS_PREFIX + line, flush=True)
    except BrokenPipeError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
