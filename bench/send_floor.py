"""``python -m bench.send_floor``: the kernel's CPU per 20 ms frame sent over loopback TCP, with no Python around it.

The floor under any load generator that sends one TCP segment per frame per session: N non-blocking
sockets (TCP_NODELAY) each send a 1.3 KB frame (20 ms of 24 kHz PCM16 as base64 JSON) 50 times a
second from one process pinned to core 0, while a second process on core 1 reads and discards.
Reported: user and system CPU µs per send of the sending process. On loopback the sender's system
time also covers the receiver's TCP work (softirq runs in the sending context), as it does for the
harness in bench/harness_bench.py. Writes bench/results/send-floor-<date>.json.

    python -m bench.send_floor [--sockets 500 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import selectors
import socket
import time
from pathlib import Path

from bench.stats import write_result

ROOT = Path(__file__).resolve().parents[1]
FRAME = b"x" * 1300


def _reader(ls: socket.socket, n: int, seconds: float) -> None:  # noqa: C901 - a bench loop
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    sel = selectors.DefaultSelector()
    for _ in range(n):
        c, _ = ls.accept()
        c.setblocking(False)
        sel.register(c, selectors.EVENT_READ)
    end, open_ = time.monotonic() + seconds + 120, n  # bounded; normally ends when the sender closes all
    while open_ and time.monotonic() < end:
        for key, _ in sel.select(0.1):
            try:
                if not key.fileobj.recv(1 << 20):
                    sel.unregister(key.fileobj)
                    open_ -= 1
            except BlockingIOError:
                pass
            except OSError:
                sel.unregister(key.fileobj)
                open_ -= 1


def step(n: int, seconds: float) -> dict:
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4096)
    pid = os.fork()
    if pid == 0:
        try:
            _reader(ls, n, seconds)
        finally:
            os._exit(0)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    socks = []
    for _ in range(n):
        s = socket.create_connection(ls.getsockname())
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    time.sleep(1.0)
    t0, c0, sent = time.monotonic(), os.times(), 0
    for _ in range(int(seconds * 50)):
        start = time.monotonic()
        for s in socks:
            try:
                s.send(FRAME)
                sent += 1
            except BlockingIOError:
                pass
        rest = 0.02 - (time.monotonic() - start)
        if rest > 0:
            time.sleep(rest)
    c1, wall = os.times(), time.monotonic() - t0
    for s in socks:
        s.close()
    ls.close()
    os.waitpid(pid, 0)
    return {"sockets": n, "sends_per_s": round(sent / wall), "offered_per_s": n * 50,
            "user_us_per_send": round((c1.user - c0.user) / sent * 1e6, 2),
            "sys_us_per_send": round((c1.system - c0.system) / sent * 1e6, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sockets", type=int, nargs="+", default=[500, 1000])
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args(argv)
    rows = [step(n, a.seconds) for n in a.sockets]
    for r in rows:
        print(r)
    result = {"date": dt.date.today().isoformat(), "frame_bytes": len(FRAME), "seconds": a.seconds, "rows": rows}
    path = write_result("send-floor", result)
    print(f"→ {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
