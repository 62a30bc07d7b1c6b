"""Sampled session recordings: a stereo WAV (caller left, agent right) on the real timeline.

Any number in a report can then be audited by ear: the gap between the caller's last word and the
agent's first sound is the first-voiced latency the record claims. Only sampled sessions pay for
this (they keep their audio in memory until the session ends).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import audio
from ..protocol import events as ev

RATE = 24000
_PREFIX = ev.append_message_prefix()


@dataclass
class Recorder:
    in_fmt: audio.AudioFormat
    out_fmt: audio.AudioFormat
    sent: list[tuple[int, bytes]] = field(default_factory=list)  # (send ns, append message)
    received: list[tuple[int, str, str]] = field(default_factory=list)  # (arrival ns, response id, base64)
    t0: int | None = None

    def on_sent(self, t_ns: int, message: bytes) -> None:
        if message.startswith(_PREFIX):
            self.t0 = self.t0 if self.t0 is not None else t_ns
            self.sent.append((t_ns, message))

    def on_delta(self, t_ns: int, response_id: str, b64: str) -> None:
        self.received.append((t_ns, response_id, b64))

    def render(self) -> np.ndarray:
        """int16 array of shape (n, 2) at 24 kHz."""
        if self.t0 is None:
            return np.zeros((0, 2), dtype=np.int16)
        left = self._place_caller()
        right = self._place_agent()
        n = max(len(left), len(right))
        out = np.zeros((n, 2), dtype=np.int16)
        out[: len(left), 0] = left
        out[: len(right), 1] = right
        return out

    def write(self, path: str | Path) -> Path:
        import soundfile as sf

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), self.render(), RATE, subtype="PCM_16")
        return path

    def _pos(self, t_ns: int) -> int:
        return max(0, int((t_ns - (self.t0 or t_ns)) * RATE / 1e9))

    def _place_caller(self) -> np.ndarray:
        track = np.zeros(self._pos(self.sent[-1][0]) + RATE, dtype=np.int16) if self.sent else np.zeros(0, np.int16)
        for t, msg in self.sent:
            pcm = _decode(msg[len(_PREFIX):-2].decode("ascii"), self.in_fmt)
            # The frame left at its deadline, i.e. when its last sample was "captured": place it before t.
            end = self._pos(t)
            start = max(0, end - len(pcm))
            track[start:end] = pcm[len(pcm) - (end - start):]
        return track

    def _place_agent(self) -> np.ndarray:
        chunks: list[tuple[int, np.ndarray]] = []
        cursor, current = 0, None
        for t, rid, b64 in self.received:
            pcm = _decode(b64, self.out_fmt)
            at = self._pos(t)
            if rid != current:  # a new response starts playing when its first delta arrives
                current, cursor = rid, at
            start = max(cursor, at)  # a late delta stalls the player (underrun)
            chunks.append((start, pcm))
            cursor = start + len(pcm)
        track = np.zeros(max((s + len(p) for s, p in chunks), default=0), dtype=np.int32)
        for s, p in chunks:
            track[s:s + len(p)] += p
        return np.clip(track, -32768, 32767).astype(np.int16)


def _decode(b64: str, fmt: audio.AudioFormat) -> np.ndarray:
    try:
        raw = base64.b64decode(b64)
    except (binascii.Error, ValueError):
        return np.zeros(0, dtype=np.int16)
    pcm = audio.decode(raw, fmt)
    if fmt.sample_rate != RATE:
        pcm = audio.resample(pcm, fmt.sample_rate, RATE)
    return np.asarray(pcm, dtype=np.int16)
