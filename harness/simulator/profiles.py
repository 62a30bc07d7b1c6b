"""Simulator profiles: seeded latency distributions, pacing, fault rates and auth, loaded from YAML.

A profile is the simulator's whole personality, so a run is reproducible from (profile, seed) alone:
every random draw goes through ``rng_for(seed, session, turn, purpose)``, which depends on nothing
else (not on timing, not on the order sessions happen to do things). A fault rate of 1.0 always
fires, which is how the tests force each fault. Schema: docs/simulator.md.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .. import paths
from ..dist import Dist
from ..limits import AZURE_S0, UNLIMITED, Limits

PROFILE_DIR = paths.profiles_dir()  # scenarios/profiles in a checkout, harness/_shipped/profiles in a wheel
DEFAULT_PROFILE = "realistic"
DIST_KINDS = ("fixed", "normal", "lognormal", "uniform")
#: Quota presets a profile's ``quotas:`` block can start from (harness/limits.py).
QUOTA_PRESETS: dict[str, Limits] = {"azure_s0": AZURE_S0, "none": UNLIMITED}
QUOTA_FIELDS = ("connections_per_minute", "tokens_per_minute", "max_session_minutes", "window_s")
TOKENS_EXCEEDED = ("close", "fail_response")
EVENT_ORDERS = ("auto", "realtime", "cascaded")
FAULTS = ("error_mid_turn", "disconnect_mid_response", "stall_response", "handshake_429", "handshake_503",
          "slow_handshake", "malformed_frame")


class ProfileError(ValueError):
    """A profile that does not validate; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault rates in [0, 1], drawn per session (handshake faults: per connection attempt) or per turn."""

    error_mid_turn: float = 0.0  # server_error event mid-response, then response.done failed
    disconnect_mid_response: float = 0.0
    disconnect_mode: str = "abort"  # abort (TCP reset, no close frame) | close_1011
    stall_response: float = 0.0  # stop sending mid-response, never finish
    handshake_429: float = 0.0  # "capacity" 429: the service is scaling, within quota (docs/simulator.md)
    handshake_503: float = 0.0
    retry_after_s: float = 1.0
    slow_handshake: float = 0.0
    slow_handshake_ms: float = 2000.0
    malformed_frame: float = 0.0
    malformed_kind: str = "both"  # text (non-JSON text frame) | binary | both
    fault_point: Dist = field(default_factory=lambda: Dist("fixed", value=0.5))  # fraction of the reply
    session_time_limit_s: float | None = None  # error session_expired, then close 1001
    max_sessions: int | None = None  # concurrent cap: further handshakes get 429


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Which credentials the handshake accepts. Values are never logged."""

    required: bool = False
    api_keys: tuple[str, ...] = ()
    bearer_tokens: tuple[str, ...] = ()
    agent_tokens: tuple[str, ...] = ()
    accept_any_unexpired_jwt: bool = False
    jwt_audiences: tuple[str, ...] = ("https://ai.azure.com", "https://cognitiveservices.azure.com")


@dataclass(frozen=True, slots=True)
class TranscriptionConfig:
    word_error_rate: float = 0.0  # seeded substitutions/deletions injected into matched transcripts
    deltas: int = 3  # transcription delta events before completed


@dataclass(frozen=True, slots=True)
class ToolsConfig:
    """Tool calls (harness/simulator/tools.py): server-side latencies and how long to wait for the caller."""

    mcp_call_ms: Dist = field(default_factory=lambda: Dist("fixed", value=400.0))  # MCP server round trip
    mcp_list_tools_ms: Dist = field(default_factory=lambda: Dist("fixed", value=150.0))
    agent_action_ms: Dist = field(default_factory=lambda: Dist("fixed", value=600.0))  # agent mode actions
    output_timeout_s: float = 15.0  # no function_call_output by then: error event, round abandoned
    argument_deltas: int = 2


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything that makes one simulator differ from another; see scenarios/profiles/*.yaml."""

    name: str = "custom"
    description: str = ""
    seed: int = 0
    # Anchor of first_audio_delay_ms: speech_stopped (the VAD/commit decision; the endpointing time
    # comes from the real VAD on the real audio) or speech_end (true end of speech on the buffer
    # timeline; clamped so audio never precedes the decision).
    first_audio_anchor: str = "speech_stopped"
    first_audio_delay_ms: Dist = field(default_factory=lambda: Dist("fixed", value=300.0))
    response_created_delay_ms: Dist = field(default_factory=lambda: Dist("fixed", value=20.0))
    transcription_delay_ms: Dist = field(default_factory=lambda: Dist("fixed", value=150.0))
    chunk_ms: Dist = field(default_factory=lambda: Dist("fixed", value=100.0))
    cadence_jitter_ms: Dist = field(default_factory=lambda: Dist("fixed", value=0.0))
    audio_pace: Dist = field(default_factory=lambda: Dist("fixed", value=2.0))
    reply_length_ms: Dist | None = None  # None: whole replies; else choose one at least this long and trim
    replies: tuple[str, ...] | None = None  # reply-bank ids to answer with (None: all); fixes which branch a script takes
    vad_batch_ms: int = 60  # VAD decision granularity: audio is classified in batches of this size
    rate_limits_event: bool = False  # rate_limits.updated after response.created (not in the SDK enum)
    warning_event: bool = False  # a `warning` event after response.created (clients must tolerate it)
    audio_timestamp_events: bool = False  # word timestamps even if the session did not ask for them
    viseme_events: bool = False  # viseme deltas even if the session did not ask for them
    # Which event order responses follow: auto (cascaded for non-realtime models and agents, realtime
    # for *realtime* models), or forced. Reference §6a "real cascaded-model order".
    event_order: str = "auto"
    quotas: Limits = UNLIMITED  # per-resource quotas (this simulator process is one resource)
    on_tokens_exceeded: str = "close"  # close: error + close 1013; fail_response: error + response.done failed
    transcription: TranscriptionConfig = field(default_factory=TranscriptionConfig)
    faults: Faults = field(default_factory=Faults)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    source: str = ""

    @property
    def session_limit_s(self) -> float | None:
        """Maximum session length: the quota (``max_session_minutes``) or the older fault knob, whichever is shorter."""
        limits = [v for v in (self.faults.session_time_limit_s,
                              None if self.quotas.max_session_minutes is None else self.quotas.max_session_minutes * 60.0)
                  if v is not None]
        return min(limits) if limits else None

    def fault_hits(self, fault: str, session_index: int, turn_index: int = -1, seed: int | None = None) -> bool:
        """Deterministic Bernoulli draw for one fault at one (session, turn)."""
        rate = float(getattr(self.faults, fault))
        if rate >= 1.0:
            return True
        if rate <= 0.0:
            return False
        return rng_for(self.seed if seed is None else seed, session_index, turn_index, fault).random() < rate


def rng_for(seed: int, session_index: int, turn_index: int, purpose: str) -> random.Random:
    """An independent stream per decision: str seeds hash with SHA-512, stable across processes."""
    return random.Random(f"{seed}:{session_index}:{turn_index}:{purpose}")


# --- loading ---------------------------------------------------------------------------------------


def _err(src: str, path: str, msg: str) -> ProfileError:
    return ProfileError(f"{src}: {path}: {msg}")


def _num(raw: Any, src: str, path: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise _err(src, path, f"expected a number, got {raw!r}")
    if (lo is not None and raw < lo) or (hi is not None and raw > hi):
        raise _err(src, path, f"{raw} is outside [{lo}, {hi}]")
    return float(raw)


def _dist(raw: Any, src: str, path: str, lo: float = 0.0) -> Dist:
    """Parse ``{dist: ..}`` or a bare number (fixed); ``lo`` is the implicit ``min``."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return Dist("fixed", value=_num(raw, src, path, lo))
    if not isinstance(raw, dict):
        raise _err(src, path, f"expected a number or {{dist: fixed|normal|lognormal|uniform, ...}}, got {raw!r}")
    kind = raw.get("dist", "fixed")
    if kind not in DIST_KINDS:
        raise _err(src, f"{path}.dist", f"unknown distribution {kind!r}; expected one of {', '.join(DIST_KINDS)}")
    need = {"fixed": ("value",), "normal": ("mean", "sd"), "lognormal": ("median", "sigma"),
            "uniform": ("lo", "hi")}[kind]
    allowed = {"dist", "min", "max", *need}
    for key in raw:
        if key not in allowed:
            raise _err(src, f"{path}.{key}", f"unknown key for dist {kind} (expected {', '.join(sorted(allowed))})")
    kw: dict[str, Any] = {"kind": kind}
    for key in need:
        if key not in raw:
            raise _err(src, f"{path}.{key}", f"required for dist {kind}")
        kw[key] = _num(raw[key], src, f"{path}.{key}", 0.0 if key in ("sd", "sigma") else None)
    if kind == "lognormal" and kw["median"] <= 0:
        raise _err(src, f"{path}.median", "must be positive")
    if kind == "uniform" and kw["hi"] < kw["lo"]:
        raise _err(src, f"{path}.hi", "must be >= lo")
    for key in ("min", "max"):
        if raw.get(key) is not None:
            kw[key] = _num(raw[key], src, f"{path}.{key}")
    if kw.get("min") is None:
        kw["min"] = lo
    if kw.get("max") is not None and kw["max"] < kw["min"]:
        raise _err(src, f"{path}.max", "must be >= min")
    return Dist(**kw)


def _section(raw: Any, cls: type, src: str, path: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise _err(src, path, f"expected a mapping, got {raw!r}")
    names = {f.name: f for f in fields(cls)}
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        p = f"{path}.{key}"
        if key not in names:
            raise _err(src, p, f"unknown key (expected one of {', '.join(sorted(names))})")
        default = getattr(cls(), key)
        if isinstance(default, Dist):
            kw[key] = _dist(value, src, p)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise _err(src, p, f"expected true or false, got {value!r}")
            kw[key] = value
        elif isinstance(default, tuple):
            if isinstance(value, str) or not isinstance(value, (list, tuple)) \
                    or not all(isinstance(v, str) for v in value):
                raise _err(src, p, "expected a list of strings")
            kw[key] = tuple(value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise _err(src, p, f"expected a string, got {value!r}")
            kw[key] = value
        elif key in ("session_time_limit_s", "max_sessions"):
            kw[key] = None if value is None else (int(_num(value, src, p, 1)) if key == "max_sessions"
                                                   else _num(value, src, p, 0.001))
        elif key in FAULTS or key == "word_error_rate":
            kw[key] = _num(value, src, p, 0.0, 1.0)
        elif isinstance(default, int):
            kw[key] = int(_num(value, src, p, 0))
        else:
            kw[key] = _num(value, src, p, 0.0)
    obj = cls(**kw)
    if cls is Faults:
        if obj.disconnect_mode not in ("abort", "close_1011"):
            raise _err(src, f"{path}.disconnect_mode", "expected abort or close_1011")
        if obj.malformed_kind not in ("text", "binary", "both"):
            raise _err(src, f"{path}.malformed_kind", "expected text, binary or both")
    return obj


def _quotas(raw: Any, src: str) -> tuple[Limits, str]:
    """``quotas: azure_s0`` / ``none``, or a mapping: ``preset`` plus any Limits field (null = unlimited)."""
    if isinstance(raw, str) or raw is None:
        raw = {"preset": raw or "none"}
    if not isinstance(raw, dict):
        raise _err(src, "quotas", f"expected a preset name ({', '.join(QUOTA_PRESETS)}) or a mapping, got {raw!r}")
    preset = raw.get("preset", "none")
    if preset not in QUOTA_PRESETS:
        raise _err(src, "quotas.preset", f"unknown preset {preset!r}; expected one of {', '.join(QUOTA_PRESETS)}")
    limits = QUOTA_PRESETS[preset]
    mode = "close"
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        p = f"quotas.{key}"
        if key == "preset":
            continue
        if key == "on_tokens_exceeded":
            if value not in TOKENS_EXCEEDED:
                raise _err(src, p, f"expected one of {', '.join(TOKENS_EXCEEDED)}")
            mode = value
        elif key == "window_s":
            kw[key] = _num(value, src, p, 0.1)
        elif key in QUOTA_FIELDS:
            kw[key] = None if value is None else _num(value, src, p, 0.001)
        else:
            raise _err(src, p, f"unknown key (expected one of preset, {', '.join(QUOTA_FIELDS)}, on_tokens_exceeded)")
    return dataclasses.replace(limits, **kw), mode


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` wins; nested mappings merge; dotted keys ("faults.stall_response") address nesting."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(key, str) and "." in key:
            head, rest = key.split(".", 1)
            value, key = {rest: value}, head
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "dist" not in value:
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def profile_from_dict(raw: dict[str, Any], src: str = "<profile>") -> Profile:
    if not isinstance(raw, dict):
        raise ProfileError(f"{src}: expected a mapping at the top level")
    kw: dict[str, Any] = {"source": src}
    for key, value in raw.items():
        if key in ("name", "description"):
            if not isinstance(value, str):
                raise _err(src, key, "expected a string")
            kw[key] = value
        elif key == "seed":
            kw[key] = int(_num(value, src, key))
        elif key == "first_audio_anchor":
            if value not in ("speech_stopped", "speech_end"):
                raise _err(src, key, "expected speech_stopped or speech_end")
            kw[key] = value
        elif key in ("first_audio_delay_ms", "response_created_delay_ms", "transcription_delay_ms"):
            kw[key] = _dist(value, src, key)
        elif key == "cadence_jitter_ms":
            kw[key] = _dist(value, src, key, lo=-60_000.0)
        elif key == "chunk_ms":
            kw[key] = _dist(value, src, key, lo=10.0)
        elif key == "audio_pace":
            kw[key] = _dist(value, src, key, lo=0.1)
        elif key == "reply_length_ms":
            kw[key] = None if value is None else _dist(value, src, key, lo=100.0)
        elif key == "replies":
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                raise _err(src, key, "expected a list of reply ids (harness/simulator/replies/replies.yaml)")
            kw[key] = None if value is None else tuple(value)
        elif key == "vad_batch_ms":
            kw[key] = int(_num(value, src, key, 10, 1000))
        elif key in ("rate_limits_event", "warning_event", "audio_timestamp_events", "viseme_events"):
            if not isinstance(value, bool):
                raise _err(src, key, "expected true or false")
            kw[key] = value
        elif key == "event_order":
            if value not in EVENT_ORDERS:
                raise _err(src, key, f"expected one of {', '.join(EVENT_ORDERS)}")
            kw[key] = value
        elif key == "quotas":
            kw["quotas"], kw["on_tokens_exceeded"] = _quotas(value, src)
        elif key == "transcription":
            kw[key] = _section(value, TranscriptionConfig, src, key)
        elif key == "faults":
            kw[key] = _section(value, Faults, src, key)
        elif key == "auth":
            kw[key] = _section(value, AuthConfig, src, key)
        elif key == "tools":
            kw[key] = _section(value, ToolsConfig, src, key)
        else:
            known = sorted(f.name for f in fields(Profile) if f.name not in ("source", "on_tokens_exceeded"))
            raise _err(src, key, f"unknown key (expected one of {', '.join(known)})")
    return Profile(**kw)


def profile_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return PROFILE_DIR / f"{name_or_path}.yaml"


def load_profile(name_or_path: str | Path | Profile | None = None, overrides: dict[str, Any] | None = None) -> Profile:
    """A shipped profile by name (ideal, realistic, degraded, chaos) or a YAML file, plus overrides."""
    if isinstance(name_or_path, Profile):
        if not overrides:
            return name_or_path
        raise ProfileError("overrides need a profile name or file, not a Profile object")
    path = profile_path(str(name_or_path or DEFAULT_PROFILE))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        shipped = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
        raise ProfileError(f"{path}: no such profile (shipped: {shipped})") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: expected a mapping at the top level")
    raw.setdefault("name", path.stem)
    if isinstance(raw.get("quotas"), str):  # so an override of one field keeps the preset
        raw["quotas"] = {"preset": raw["quotas"]}
    if overrides:
        raw = deep_merge(raw, overrides)
    return profile_from_dict(raw, str(path))
