"""Speech cache: keys change exactly when the audio would, hits never synthesise, entries are measured
with the same VAD and fingerprint code as committed fixtures, and the simulator recognises them."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import yaml

from harness import audio, fixtures, vad
from harness.simulator.transcribe import Transcriber
from harness.tts.cache import Line, SpeechCache, line_key
from harness.tts.engines import EspeakEngine, Engines, Voice, piper_available
from harness.tts.render import Caller

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng is not installed")

TEXT = "I was charged twice for order four four one seven."


class Counting(EspeakEngine):
    """The real espeak-ng engine, counting how often it is asked to synthesise."""

    def __init__(self) -> None:
        self.calls = 0

    def synthesize(self, text, voice, rate):
        self.calls += 1
        return super().synthesize(text, voice, rate)


def counting_cache(directory) -> tuple[SpeechCache, Counting]:
    engines = Engines()
    engine = Counting()
    engines._made["espeak"] = engine
    return SpeechCache(directory, engines), engine


def test_same_inputs_same_key_and_every_setting_changes_it() -> None:
    settings = {"wpm": 175, "version": "1.51"}
    base = Line(text=TEXT, voice=Voice("espeak", "en-us"))
    key = line_key(base, settings)
    assert key == line_key(Line(text=TEXT, voice=Voice("espeak", "en-us")), dict(settings))
    changed = [
        dataclasses.replace(base, text=TEXT + "!"),
        dataclasses.replace(base, voice=Voice("espeak", "en-gb")),
        dataclasses.replace(base, voice=Voice("piper", "en-us")),
        dataclasses.replace(base, rate=0.9),
        dataclasses.replace(base, caller=Caller(noise="car")),
        dataclasses.replace(base, caller=Caller(noise="car", snr_db=5)),
        dataclasses.replace(base, caller=Caller(noise="babble")),
        dataclasses.replace(base, caller=Caller(channel="g711")),
        dataclasses.replace(base, caller=Caller(gain_db=-6)),
    ]
    keys = {line_key(line, settings) for line in changed}
    assert len(keys) == len(changed) and key not in keys
    assert line_key(base, {**settings, "version": "1.52"}) != key  # engine upgrade: new audio, new key
    assert line_key(base, {**settings, "wpm": 180}) != key
    # noise "none" ignores the SNR: the same audio, the same key
    assert line_key(dataclasses.replace(base, caller=Caller(noise="none", snr_db=3)), settings) == key


def test_miss_synthesises_and_measures_hit_does_not(tmp_path) -> None:
    cache, engine = counting_cache(tmp_path / "cache")
    line = Line(text=TEXT, voice=Voice("espeak", "en-us"), rate=1.1, caller=Caller(noise="car", snr_db=10))
    fx = cache.get(line)
    assert engine.calls == 1 and cache.stats.synthesised == 1 and cache.stats.speech_s > 1.0
    # measured with the committed fixtures' code
    pcm = fx.samples()
    assert vad.speech_bounds(pcm, 24000) == (fx.speech_start_ms, fx.speech_end_ms)
    assert audio.fingerprint(pcm, 24000) == fx.fingerprint
    assert fx.synth == "espeak:en-us rate=1.1 noise=car@10dB" and fx.kind == "synthesised"
    assert fx.text == TEXT and fx.language == "en-us" and fx.snr_db == 10.0
    table = fixtures.load_manifest(cache.dir)  # a valid fixture directory
    assert list(table) == [fx.id] and table[fx.id].fingerprint == fx.fingerprint

    # a fresh cache object (a later run): a hit, no synthesis, the same entry
    again, engine2 = counting_cache(tmp_path / "cache")
    assert again.get(line).fingerprint == fx.fingerprint
    assert engine2.calls == 0 and again.stats.hits == 1 and again.stats.synthesised == 0
    # a variant of the same line re-renders from memory: one synthesis for many callers
    again.get(dataclasses.replace(line, caller=Caller(channel="g711")))
    again.get(dataclasses.replace(line, caller=Caller(gain_db=-10)))
    assert engine2.calls == 1 and len(fixtures.load_manifest(cache.dir)) == 3
    # a changed setting is a miss
    again.get(dataclasses.replace(line, rate=0.9))
    assert engine2.calls == 2


def test_recorded_fixture_variants_and_simulator_recognition(tmp_path) -> None:
    cache, engine = counting_cache(tmp_path / "cache")
    src = fixtures.get_fixture("cs_order_status")
    noisy = cache.get(Line(text=src.text, caller=Caller(noise="babble", snr_db=5, channel="g711"), source=src))
    assert engine.calls == 0 and noisy.text == src.text and noisy.id.startswith("var_")
    said = cache.get(Line(text=TEXT, voice=Voice("espeak", "en-us")))
    t = Transcriber("audio_fixtures", (str(cache.dir),))
    for fx in (noisy, said):
        x = fx.samples()
        k = 24
        got, score = t.recognise(x[max(0, fx.speech_start_ms - 300) * k: fx.speech_end_ms * k], 24000)
        assert got == fx.id and score > 0.8, (fx.synth, got, score)
    # without the cache directory the simulator cannot know the synthesised line
    assert Transcriber("audio_fixtures").recognise(said.samples(), 24000)[0] is None


def test_torn_manifest_is_rebuilt_not_trusted(tmp_path) -> None:
    cache, engine = counting_cache(tmp_path / "cache")
    line = Line(text="Call me back.", voice=Voice("espeak", "en-us"))
    fx = cache.get(line)
    (cache.dir / fx.file).unlink()  # the WAV is gone: the entry must be made again
    again, engine2 = counting_cache(tmp_path / "cache")
    assert again.get(line).path.exists() and engine2.calls == 1
    (cache.dir / "manifest.yaml").write_text("fixtures: [oops")
    third, engine3 = counting_cache(tmp_path / "cache")
    third.get(line)
    assert engine3.calls == 1 and yaml.safe_load((cache.dir / "manifest.yaml").read_text())["fixtures"][0]["id"] == fx.id


@pytest.mark.skipif(not piper_available(), reason="Piper (voiceload[tts]) is not installed")
def test_piper_is_the_default_and_sounds_like_the_text(tmp_path) -> None:
    from harness.tts.engines import default_engine, parse_voice

    engine, note = default_engine()
    assert engine == "piper" and "offline" in note
    cache = SpeechCache(tmp_path / "cache")
    fx = cache.get(Line(text="Please reset my password.", voice=parse_voice(None, engine)))
    assert fx.synth == "piper:en_US-joe-medium" and fx.language == "en-US"
    assert 0 < fx.speech_start_ms < fx.speech_end_ms < fx.duration_ms
    assert cache.stats.by_engine["piper"][0] > 1.0  # seconds of speech
    assert np.abs(fx.samples()).max() > 3000


def test_noise_that_hides_the_speech_keeps_the_true_bounds(tmp_path):
    """At -10 dB white noise the VAD hears noise everywhere: the entry keeps the clean line's bounds."""
    cache, _ = counting_cache(tmp_path / "cache")
    clean = cache.get(Line(text=TEXT, voice=Voice("espeak", "en-us")))
    drowned = cache.get(Line(text=TEXT, voice=Voice("espeak", "en-us"), caller=Caller(noise="white", snr_db=-10)))
    assert vad.speech_bounds(drowned.samples(), 24000) != (drowned.speech_start_ms, drowned.speech_end_ms)
    assert (drowned.speech_start_ms, drowned.speech_end_ms) == (clean.speech_start_ms, clean.speech_end_ms)
