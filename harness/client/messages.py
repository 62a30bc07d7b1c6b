"""Microphone audio as whole append messages, built once per shared frame set before load starts."""

from __future__ import annotations

from typing import Any

from .. import audio, fixtures
from ..protocol import events as ev
from ..scenario import Scenario
from ..tts.prepare import fixture_for

NOISE_VARIANTS = 8  # distinct noise realisations shared by all sessions (memory stays per-fixture, not per-session)

_MESSAGES: dict[int, tuple[Any, tuple[bytes, ...]]] = {}


def _messages(frames: tuple[str, ...]) -> tuple[bytes, ...]:
    """Whole append messages built once per shared frame set; the hot path only sends bytes."""
    hit = _MESSAGES.get(id(frames))
    if hit is None or hit[0] is not frames:
        hit = (frames, tuple(ev.append_message(f) for f in frames))
        _MESSAGES[id(frames)] = hit
    return hit[1]



def prepare(scenario: Scenario, seeds: range = range(NOISE_VARIANTS)) -> None:
    """Decode, perturb and encode every utterance the scenario speaks before load starts.

    Building frames is milliseconds of numpy work per fixture; done lazily inside the event loop it
    would make the first sessions' frames late. Perturbed frames depend on the session seed only when
    noise is added, so without ``snr_db`` one set serves every session.
    """
    s, a = scenario.session, scenario.audio
    fmt = audio.input_format(s.get("input_audio_format", "pcm16"), s.get("input_audio_sampling_rate"))
    _messages(fixtures.silence_frames(fmt, a.chunk_ms, a.room_tone_dbfs, seed=0))
    for seed in (seeds if a.perturb.snr_db is not None else range(1)):
        for turn in scenario.conversation:
            for variant in scenario.variants or [None]:
                fx = fixture_for(scenario, turn, variant)
                fs = fixtures.frames(fx.id, fmt, a.chunk_ms, gain_db=a.perturb.gain_db, snr_db=a.perturb.snr_db,
                                     seed=seed, directory=fx.directory or scenario.fixtures_dir)
                _messages(fs.frames)

