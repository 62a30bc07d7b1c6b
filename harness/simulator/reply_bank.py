"""The reply bank sessions draw from: the agent's speech (replies.py) chosen per response and cut
into base64 deltas once per output format and chunk size, shared by every session of the process.

Apart from the response state machine (responder.py) that streams the chosen reply; loading the
speech files is deferred to the first use, so importing the simulator does not read them.
"""

from __future__ import annotations

import base64
import random
import threading
from typing import Any

from .. import audio


class ReplyBank:
    """The agent's speech (harness.simulator.replies) cut into base64 deltas once per format/chunk size."""

    def __init__(self, replies: list[Any] | None = None) -> None:
        self._replies = replies
        self._chunks: dict[tuple[str, str, int], tuple[tuple[str, ...], tuple[float, ...]]] = {}
        self._lock = threading.Lock()

    @property
    def replies(self) -> list[Any]:
        if self._replies is None:
            from .replies import load_replies

            self._replies = list(load_replies())
            if not self._replies:
                raise RuntimeError("the reply bank is empty")
        return self._replies

    def preload(self, formats: tuple[str, ...], chunk_ms: int | None) -> None:
        """Encode every reply in every format up front (and chunk it, if the chunk size is fixed)."""
        for reply in self.replies:
            for name in formats:
                fmt = audio.output_format(name)
                if chunk_ms:
                    self.audio_chunks(reply, fmt, chunk_ms)
                else:
                    reply.encoded(fmt)

    def choose(self, rng: random.Random, target_ms: float | None) -> tuple[Any, float]:
        """A reply and how much of it to play: whole replies, or one at least ``target_ms`` long, trimmed."""
        replies = self.replies
        if target_ms is None:
            reply = replies[rng.randrange(len(replies))]
            return reply, duration_ms(reply)
        long_enough = [r for r in replies if duration_ms(r) >= target_ms]
        reply = rng.choice(long_enough) if long_enough else max(replies, key=duration_ms)
        return reply, min(duration_ms(reply), target_ms)

    def audio_chunks(self, reply: Any, fmt: audio.AudioFormat, chunk_ms: int) -> tuple[tuple[str, ...], tuple[float, ...]]:
        """(base64 deltas, their durations in ms) for a whole reply (cached, shared by all sessions)."""
        key = (reply.id, fmt.name, chunk_ms)
        hit = self._chunks.get(key)
        if hit is not None:
            return hit
        data = reply.encoded(fmt)
        size = max(fmt.bytes_per_sample, fmt.bytes_for_ms(chunk_ms))
        chunks = tuple(base64.b64encode(data[i:i + size]).decode("ascii") for i in range(0, len(data), size))
        durs = tuple(fmt.ms_for_bytes(min(size, len(data) - i)) for i in range(0, len(data), size))
        with self._lock:
            self._chunks[key] = (chunks, durs)
        return chunks, durs


def duration_ms(reply: Any) -> float:
    return len(reply.samples) * 1000.0 / audio.BASE_RATE
