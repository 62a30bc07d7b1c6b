"""Input transcription by recognising the project's own fixtures - not speech recognition.

No ASR model can be downloaded in this project's environment, so the simulator "transcribes" by
fingerprint-matching the utterance against audio_fixtures/manifest.yaml (harness.audio.match) and
returning the matched fixture's text. Any other audio yields ``UNRECOGNISED``. That is enough to
exercise the transcription events and the harness's WER computation honestly: a profile's
``transcription.word_error_rate`` injects seeded word errors into matched transcripts.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .. import audio
from ..protocol import events as ev
from .actions import Action, Compute, Send, Timer

if TYPE_CHECKING:
    from .profiles import TranscriptionConfig

UNRECOGNISED = "[unrecognised audio]"
CACHE_SIZE = 512
_CONFUSIONS = ("the", "a", "to", "and", "uh", "it", "in", "that", "on", "for", "this", "is")


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    fixture_id: str | None  # None: nothing matched
    score: float


class Transcriber:
    """Loads the fixture fingerprints once (lazily) and memoises results per identical audio."""

    def __init__(self, directory: str | Path = "audio_fixtures", extra_dirs: tuple[str | Path, ...] = ()) -> None:
        self.directory = directory
        self.extra_dirs = tuple(extra_dirs)  # e.g. a scenario's speech cache (harness/tts): synthesised lines
        self._texts: dict[str, str] | None = None
        self._candidates: dict[str, str] = {}
        self._cache: OrderedDict[tuple[int, int, bytes], tuple[str | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _load(self) -> None:
        from .. import fixtures  # late: the manifest is only read when transcription is enabled

        manifest: dict[str, fixtures.Fixture] = {}
        try:
            manifest = fixtures.library(self.directory)  # the caller's fixtures and the shipped library
        except (fixtures.FixtureError, OSError):
            pass
        for directory in self.extra_dirs:  # speech caches of say: lines (harness/tts)
            try:
                manifest.update(fixtures.load_manifest(directory))
            except (fixtures.FixtureError, OSError):
                pass
        # Noisy variants share the clean text; matching either gives the right words.
        self._candidates = {fid: fx.fingerprint for fid, fx in manifest.items() if fx.fingerprint}
        self._texts = {fid: fx.text for fid, fx in manifest.items()}

    def preload(self) -> None:
        """Read the manifest and decode every template now, not during the first turn."""
        with self._lock:
            if self._texts is None:
                self._load()
        if self._candidates:
            audio.match(np.zeros(audio.BASE_RATE, np.int16), audio.BASE_RATE, self._candidates)

    def recognise(self, samples: np.ndarray, sample_rate: int) -> tuple[str | None, float]:
        """(fixture id or None, score) for an utterance."""
        with self._lock:
            if self._texts is None:
                self._load()
        if len(samples) == 0 or not self._candidates:
            return None, 0.0
        data = np.ascontiguousarray(samples, dtype=np.int16).tobytes()
        key = (sample_rate, len(data), _digest(data))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        try:
            found = audio.match(samples, sample_rate, self._candidates)
        except ValueError:
            found = None
        result = (found[0], float(found[1])) if found else (None, 0.0)
        with self._lock:
            self._cache[key] = result
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return result

    def transcribe(self, samples: np.ndarray, sample_rate: int, rng: random.Random,
                   word_error_rate: float = 0.0) -> Transcript:
        fixture_id, score = self.recognise(samples, sample_rate)
        if fixture_id is None:
            return Transcript(UNRECOGNISED, None, score)
        assert self._texts is not None
        return Transcript(inject_errors(self._texts[fixture_id], rng, word_error_rate), fixture_id, score)


def _digest(data: bytes) -> bytes:
    import hashlib

    return hashlib.blake2b(data, digest_size=16).digest()


def inject_errors(text: str, rng: random.Random, rate: float) -> str:
    """Seeded substitutions and deletions at ``rate`` per word (expected WER ~= rate)."""
    if rate <= 0.0:
        return text
    out = []
    for word in text.split():
        if rng.random() < rate:
            if rng.random() < 0.5:
                continue  # deletion
            word = rng.choice([w for w in _CONFUSIONS if w != word.lower()])
        out.append(word)
    return " ".join(out) if out else text.split()[0]


def recognise_action(transcriber: Transcriber, samples: np.ndarray, rate: int, rng: random.Random,
                     cfg: "TranscriptionConfig", then: Callable[[str, int], list[Action]]) -> Compute:
    """Recognise off the event loop, then ``then(text, now_ns)`` on it."""

    def work() -> str:
        return transcriber.transcribe(samples, rate, rng, cfg.word_error_rate).text

    return Compute(work, then)


def transcription_events(text: str, item_id: str, deltas: int) -> tuple[list[dict], dict]:
    """(``deltas`` delta events, the ``completed`` event) for a transcript."""
    words = text.split()
    n = max(1, min(deltas, len(words))) if deltas else 0
    out = []
    for k in range(n):
        a, b = len(words) * k // n, len(words) * (k + 1) // n
        piece = (" " if k else "") + " ".join(words[a:b])
        out.append(ev.server_event(ev.TRANSCRIPTION_DELTA, item_id=item_id, content_index=0, delta=piece))
    return out, ev.server_event(ev.TRANSCRIPTION_COMPLETED, item_id=item_id, content_index=0, transcript=text)


def transcription_actions(transcriber: Transcriber, samples: np.ndarray, rate: int, rng: random.Random,
                          cfg: "TranscriptionConfig", item_id: str, now_ns: int, delay_ns: int,
                          alive: Callable[[], bool]) -> list[Action]:
    """Realtime order: deltas spread over the delay, ``.completed`` at ``now + delay`` after the commit."""

    def later(event: dict) -> Callable[[int], list[Action]]:
        return lambda _now: [Send(event)] if alive() else []

    def then(text: str, done_ns: int) -> list[Action]:
        deltas, done = transcription_events(text, item_id, cfg.deltas)
        n = len(deltas)
        out: list[Action] = [Timer(now_ns + delay_ns * (k + 1) // (n + 1), later(d)) for k, d in enumerate(deltas)]
        out.append(Timer(now_ns + delay_ns, later(done)))
        return out

    return [recognise_action(transcriber, samples, rate, rng, cfg, then)]
