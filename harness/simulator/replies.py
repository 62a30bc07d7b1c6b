"""The simulator's agent reply bank: short spoken replies it streams back as response audio.

Replies are real speech (Piper, see audio_fixtures/generate.py) with a measured leading silence, so
the client's first-voiced-sample measurement sees what it would see from a real TTS voice. Each
reply is encoded once per output format and shared by every session; the simulator slices deltas.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from harness import audio

REPLY_DIR = Path(__file__).resolve().parent / "replies"


@dataclass(eq=False)
class Reply:
    """One agent utterance: int16 samples at 24 kHz mono, plus what was said."""

    id: str
    text: str
    use_case: str
    samples: np.ndarray = field(repr=False)
    leading_silence_ms: int = 0
    duration_ms: int = 0
    _encoded: dict[audio.AudioFormat, bytes] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def encoded(self, fmt: audio.AudioFormat) -> bytes:
        """The whole reply in ``fmt`` (headerless), computed once per format."""
        data = self._encoded.get(fmt)
        if data is None:
            with self._lock:
                data = self._encoded.get(fmt)
                if data is None:
                    data = self._encoded[fmt] = audio.encode(self.samples, fmt)
        return data


@functools.lru_cache(maxsize=4)
def _load(directory: Path) -> tuple[Reply, ...]:
    doc = yaml.safe_load((directory / "replies.yaml").read_text(encoding="utf-8"))
    out = []
    for i, row in enumerate(doc["replies"]):
        path = directory / row["file"]
        x, rate = sf.read(path, dtype="int16")
        if rate != audio.BASE_RATE or x.ndim != 1:
            raise ValueError(f"{path}: expected 24000 Hz mono PCM16, got {rate} Hz, shape {x.shape}")
        x.setflags(write=False)
        out.append(
            Reply(
                id=str(row["id"]), text=str(row["text"]), use_case=str(row.get("use_case", "")), samples=x,
                leading_silence_ms=int(row.get("leading_silence_ms", 0)), duration_ms=len(x) * 1000 // rate,
            )
        )
    return tuple(out)


def load_replies(directory: str | Path | None = None) -> list[Reply]:
    """All replies in ``replies.yaml`` order (loaded once per process; the list is a fresh copy)."""
    return list(_load(Path(directory).resolve() if directory else REPLY_DIR))


def select_replies(replies: list[Reply] | None, ids: tuple[str, ...] | None, src: str = "<profile>") -> list[Reply] | None:
    """The profile's ``replies:`` subset of the bank (None: the whole bank, loaded lazily as before).

    A profile that always answers the same way is how a test drives a branching conversation down a
    known branch (harness/branching.py); unknown ids are refused with the known ones listed.
    """
    if ids is None:
        return replies
    bank = {r.id: r for r in (replies if replies is not None else load_replies())}
    unknown = [i for i in ids if i not in bank]
    if unknown or not ids:
        from .profiles import ProfileError

        raise ProfileError(f"{src}: replies: unknown reply id(s) {', '.join(unknown) or '(none given)'}; "
                           f"known: {', '.join(bank)}")
    return [bank[i] for i in ids]
