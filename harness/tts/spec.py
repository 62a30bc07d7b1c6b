"""The scenario side of speech: ``speech:`` defaults, ``say:`` turns and the ``variants:`` matrix.

Parsed with harness.schema's helpers so every problem names the file and field, and validated
without loading any model: engines and voices are checked for existence only when a run or
``voiceload fixtures say`` prepares the audio (still before any load starts).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from .. import schema as s
from .engines import ENGINES, MAX_RATE, MIN_RATE, default_engine, parse_voice
from .render import CHANNELS, NOISES, Caller

MAX_VARIANTS = 256  # a matrix bigger than this is a typo, and would take minutes to synthesise
SPEECH_SCOPE = "https://cognitiveservices.azure.com/.default"
VARIANT_KEYS = ("voice", "rate", "noise", "snr_db", "channel", "gain_db", "drop_rate")


@dataclass
class SpeechSpec:
    """Defaults for ``say:`` lines; ``engine`` is Piper when installed, else espeak-ng (``note`` says so)."""

    engine: str = "piper"
    voice: str | None = None
    rate: float = 1.0
    cache_dir: str | None = None  # relative to the scenario file's directory
    azure: Any = None  # harness.tts.azure.AzureSpeechConfig when speech.azure is given
    note: str = ""
    prepared: dict[str, Any] | None = None  # what prepare_speech did (run.json "speech")


@dataclass
class SayLine:
    text: str
    voice: str | None = None  # wins over the variant's voice (a line pinned to a language)
    rate: float = 1.0  # multiplies speech.rate and the variant's rate


@dataclass
class Variant:
    """One caller of the matrix: how every line of a session is spoken and transmitted."""

    index: int = 0
    id: str = ""
    label: str = ""
    voice: str | None = None
    rate: float = 1.0
    caller: Caller = Caller()
    drop_rate: float | None = None  # None: audio.perturb.drop_rate

    def fields(self) -> dict[str, Any]:
        c = self.caller
        return {"voice": self.voice, "rate": self.rate, "noise": c.noise, "snr_db": c.effective_snr,
                "channel": c.channel, "gain_db": c.gain_db, "drop_rate": self.drop_rate}


def parse_speech(raw: dict[str, Any], p: s.Problems) -> SpeechSpec:
    s.check_keys(raw, ("engine", "voice", "rate", "cache_dir", "azure"), "speech", p)
    chosen, note = default_engine()
    engine = s.get_str(raw, "engine", "speech", p, None, choices=ENGINES) or chosen
    spec = SpeechSpec(engine=engine, voice=s.get_str(raw, "voice", "speech", p),
                      rate=s.get_float(raw, "rate", "speech", p, 1.0, lo=MIN_RATE, hi=MAX_RATE) or 1.0,
                      cache_dir=s.get_str(raw, "cache_dir", "speech", p), note="" if "engine" in raw else note)
    if spec.voice:
        _check_voice(spec.voice, spec.engine, "speech.voice", p)
    if "azure" in raw:
        spec.azure = _azure(s.get_dict(raw, "azure", "speech", p), p)
    return spec


def _azure(raw: dict[str, Any], p: s.Problems) -> Any:
    from ..protocol.endpoint import AuthConfig
    from .azure import KEY_ENV, AzureSpeechConfig

    path = "speech.azure"
    s.check_keys(raw, ("region", "endpoint", "auth", "timeout_s"), path, p)
    auth_raw = s.get_dict(raw, "auth", path, p)
    apath = s.join(path, "auth")
    s.check_keys(auth_raw, ("kind", "api_key_env", "token_env", "scope", "tenant_id"), apath, p)
    kind = s.get_str(auth_raw, "kind", apath, p, "api_key", choices=("api_key", "entra", "token")) or "api_key"
    auth = AuthConfig(kind=kind, api_key_env=s.get_str(auth_raw, "api_key_env", apath, p, KEY_ENV) or KEY_ENV,
                      scope=s.get_str(auth_raw, "scope", apath, p, SPEECH_SCOPE) or SPEECH_SCOPE,
                      tenant_id=s.get_str(auth_raw, "tenant_id", apath, p))
    if "token_env" in auth_raw:
        auth.token_env = s.get_str(auth_raw, "token_env", apath, p) or auth.token_env
    endpoint = s.get_str(raw, "endpoint", path, p)
    region = s.get_str(raw, "region", path, p)
    if endpoint and "://" in endpoint and "@" in endpoint.split("://", 1)[1].split("/", 1)[0]:
        p.add(s.join(path, "endpoint"), "credentials do not belong in the URL; use speech.azure.auth")
    return AzureSpeechConfig(region=region, endpoint=endpoint, auth=auth,
                             timeout_s=s.get_float(raw, "timeout_s", path, p, 30.0, lo=1, hi=600) or 30.0)


def _check_voice(voice: str, engine: str, path: str, p: s.Problems) -> None:
    try:
        parse_voice(voice, engine)
    except ValueError as exc:
        p.add(path, str(exc))


def parse_say(raw: dict[str, Any], path: str, speech: SpeechSpec | None, p: s.Problems) -> SayLine | None:
    """The ``say:`` part of a turn (None when the turn plays a fixture)."""
    if "say" not in raw:
        for key in ("voice", "rate"):
            if key in raw:
                p.add(s.join(path, key), "only applies to a say: turn")
        return None
    text = s.get_str(raw, "say", path, p)
    if not text or not text.strip():
        p.add(s.join(path, "say"), "expected the words the caller says, got an empty string")
        return None
    if "fixture" in raw:
        p.add(path, "give either say: (synthesised) or fixture: (recorded), not both")
    voice = s.get_str(raw, "voice", path, p)
    if voice:
        _check_voice(voice, speech.engine if speech else "piper", s.join(path, "voice"), p)
    return SayLine(text=text.strip(), voice=voice,
                   rate=s.get_float(raw, "rate", path, p, 1.0, lo=MIN_RATE, hi=MAX_RATE) or 1.0)


def parse_variants(data: dict[str, Any], speech: SpeechSpec, p: s.Problems) -> list[Variant]:
    """A mapping is a matrix (every combination of its lists); a list names each variant.

    The ``get_list`` calls whose problems are dropped declare that a value may also be a list (for the
    JSON Schema, harness/declarations.py); the values themselves are checked per combination.
    """
    raw = data.get("variants")
    if raw is None:
        return []
    if not isinstance(raw, dict):
        s.get_list(data, "variants", "", p if isinstance(raw, list) else s.Problems([]))
    if isinstance(raw, dict):
        s.check_keys(raw, VARIANT_KEYS, "variants", p)
        for k in VARIANT_KEYS:
            if k in raw:
                s.get_list(raw, k, "variants", p if isinstance(raw[k], list) else s.Problems([]))
        axes = {k: (v if isinstance(v, list) else [v]) for k, v in raw.items() if k in VARIANT_KEYS}
        for k, vals in axes.items():
            if not vals:
                p.add(s.join("variants", k), "expected a value or a non-empty list")
        total = 1
        for vals in axes.values():
            total *= max(1, len(vals))
        if total > MAX_VARIANTS:
            p.add("variants", f"{total} combinations; at most {MAX_VARIANTS}")
            return []
        combos = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())] if axes else []
        paths = ["variants"] * len(combos)
    elif isinstance(raw, list):
        if len(raw) > MAX_VARIANTS:
            p.add("variants", f"{len(raw)} variants; at most {MAX_VARIANTS}")
            return []
        combos, paths = [], []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                p.add(f"variants[{i}]", f"expected a mapping of {', '.join(VARIANT_KEYS)}, got {item!r}")
                continue
            s.check_keys(item, VARIANT_KEYS + ("id",), f"variants[{i}]", p)
            combos.append(item)
            paths.append(f"variants[{i}]")
    else:
        p.add("variants", "expected a mapping of lists (a matrix) or a list of mappings")
        return []
    out: list[Variant] = []
    seen: set[tuple[Any, ...]] = set()
    for combo, path in zip(combos, paths):
        mine = s.Problems([])
        v = _variant(combo, path, speech, mine)
        for item in mine.items:  # a bad value of a matrix axis is reported once, not per combination
            if item not in p.items:
                p.add(*item)
        key = tuple(v.fields().values())
        if key in seen:  # e.g. noise none at two SNRs: one caller, not two
            continue
        seen.add(key)
        v.index, v.id = len(out), str(combo.get("id") or f"v{len(out)}")
        out.append(v)
    varying = [k for k in VARIANT_KEYS if len({str(v.fields()[k]) for v in out}) > 1]
    for v in out:
        v.label = label(v, varying)
    return out


def _variant(raw: dict[str, Any], path: str, speech: SpeechSpec, p: s.Problems) -> Variant:
    voice = s.get_str(raw, "voice", path, p)
    if voice:
        _check_voice(voice, speech.engine, s.join(path, "voice"), p)
    noise = s.get_str(raw, "noise", path, p, "none", choices=NOISES) or "none"
    caller = Caller(noise=noise, snr_db=s.get_float(raw, "snr_db", path, p, None, lo=-10, hi=80),
                    channel=s.get_str(raw, "channel", path, p, "wideband", choices=CHANNELS) or "wideband",
                    gain_db=s.get_float(raw, "gain_db", path, p, 0.0, lo=-40, hi=20) or 0.0)
    return Variant(voice=voice, rate=s.get_float(raw, "rate", path, p, 1.0, lo=MIN_RATE, hi=MAX_RATE) or 1.0,
                   caller=caller, drop_rate=s.get_float(raw, "drop_rate", path, p, None, lo=0, hi=0.5))


def label(v: Variant, keys: list[str]) -> str:
    """A short readable name from the fields that differ between variants (``v0`` if none do)."""
    f, parts = v.fields(), []
    for k in keys:
        if k == "voice":
            parts.append(f"voice={f['voice'] or 'default'}")
        elif k == "rate":
            parts.append(f"rate={f['rate']:g}")
        elif k in ("noise", "snr_db"):
            if "noise=" not in " ".join(parts):
                parts.append(f"noise={f['noise']}" + (f"@{f['snr_db']:g}dB" if f["snr_db"] is not None else ""))
        elif k == "channel":
            parts.append(f"channel={f['channel']}")
        elif k == "gain_db":
            parts.append(f"gain={f['gain_db']:+g}dB")
        elif k == "drop_rate":
            parts.append(f"drop={(f['drop_rate'] or 0) * 100:g}%")
    return " ".join(parts) or v.id

