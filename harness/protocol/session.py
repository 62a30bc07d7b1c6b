"""Session configuration: the service's defaults, ``session.update`` merging and validation. No I/O.

One module for both sides of the contract: the simulator builds ``session.created`` and merges
``session.update`` with it, and the scenario validator checks a scenario's ``session:`` block with
the same rules, so a config the simulator would reject never reaches a load run. Defaults and
ranges follow shared/voicelive-protocol.md §2; where it says "unconfirmed" the SDK models decide.
Params in issues are dotted paths relative to the session (``turn_detection.threshold``); the
simulator prefixes ``session.`` as the service does in ``error.param``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

from .. import audio
from .endpoint import DEFAULT_API_VERSION
from .events import new_id

#: Every field a client may send in ``session`` (SDK RequestSession + Learn reference).
SESSION_FIELDS = frozenset({
    "model", "modalities", "animation", "voice", "instructions", "input_audio_sampling_rate",
    "input_audio_format", "output_audio_format", "turn_detection", "input_audio_noise_reduction",
    "input_audio_echo_cancellation", "avatar", "input_audio_transcription", "output_audio_timestamp_types",
    "tools", "tool_choice", "parallel_tool_calls", "temperature", "max_response_output_tokens",
    "reasoning_effort", "interim_response", "include", "metadata",
})
#: Server-owned fields: echoed in session.created/updated, ignored if a client sends them back.
SERVER_FIELDS = frozenset({"id", "object", "expires_at", "agent"})

MODALITIES = ("text", "audio", "animation", "avatar")
INPUT_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")
SERVER_VAD = "server_vad"
AZURE_SEMANTIC_VADS = ("azure_semantic_vad", "azure_semantic_vad_en", "azure_semantic_vad_multilingual",
                       "azure_multilingual_semantic_vad")
OPENAI_SEMANTIC_VAD = "semantic_vad"
TURN_DETECTION_TYPES = (SERVER_VAD, *AZURE_SEMANTIC_VADS, OPENAI_SEMANTIC_VAD)
EOU_MODELS = ("semantic_detection_v1", "semantic_detection_v1_en", "semantic_detection_v1_multilingual")
EOU_LEVELS = ("low", "medium", "high", "default")
EAGERNESS = ("auto", "low", "medium", "high")
#: Transcription models of the 2026-07-15 and 2026-06-01-preview references (``mai-transcribe`` aliases
#: ``mai-transcribe-2``; SDK 1.3 spells ``mai-transcribe-1``). Others are warned about, never refused.
TRANSCRIPTION_MODELS = ("azure-speech", "mai-transcribe-2", "mai-transcribe", "mai-transcribe-1", "whisper-1",
                        "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-diarize")
NOISE_REDUCTION_TYPES = ("azure_deep_noise_suppression", "near_field", "far_field")
VOICE_TYPES = ("openai", "azure-standard", "azure-custom", "azure-personal", "avatar-voice-sync",
               "azure-realtime-native")
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
TOOL_CHOICES = ("auto", "none", "required")

#: api-version from which the default prefix padding grew from 300 ms (§2).
PADDING_CHANGE_VERSION = "2026-04-10"
#: api-version from which ``auto_truncate`` exists (§2).
AUTO_TRUNCATE_VERSION = "2026-01-01"
DEFAULT_SESSION_S = 60 * 60  # S0's maximum session length (reference §6a, Learn quota page 2026-01)
#: api-version from which session.created/updated carry ``object`` and ``expires_at`` (reference §6a: a
#: 2025-10-01 trace has neither; the 2026-07-15 reference adds only ``expires_at`` over 2026-06-01-preview).
EXPIRES_AT_VERSION = "2026-07-15"
DEFAULT_AZURE_VOICE = {"type": "azure-standard", "name": "en-US-Ava:DragonHDLatestNeural"}
DEFAULT_OPENAI_VOICE = "alloy"


@dataclass(frozen=True, slots=True)
class SessionIssue:
    """One invalid field: ``param`` is a dotted path relative to the session."""

    param: str
    message: str
    code: str = "invalid_value"
    warning: bool = False  # legal but unknown to voiceload: reported, never refused


def _version_key(api_version: str) -> str:
    """'2026-01-01-preview' -> '2026-01-01': versions are dates, previews sort with their date."""
    return (api_version or "")[:10]


def is_realtime_model(model: str | None) -> bool:
    """Speech-to-speech models (gpt-realtime*, phi4-mm-realtime...) start with transcription off."""
    return bool(model) and "realtime" in model.lower()


def is_cascaded(model: str | None, agent: bool = False) -> bool:
    """Cascaded STT -> LLM -> TTS (gpt-4o, gpt-4.1, gpt-5.x, phi..., agents): the real cascaded event order."""
    return agent or not is_realtime_model(model)


def has_expires_at(api_version: str) -> bool:
    return _version_key(api_version) >= EXPIRES_AT_VERSION


def turn_detection_defaults(td_type: str, api_version: str = DEFAULT_API_VERSION) -> dict[str, Any]:
    """The full ``turn_detection`` object the service reports for a type (api-version dependent)."""
    semantic = td_type in AZURE_SEMANTIC_VADS
    new = _version_key(api_version) >= PADDING_CHANGE_VERSION
    td: dict[str, Any] = {"type": td_type, "threshold": 0.5,
                          "prefix_padding_ms": (420 if semantic else 400) if new else 300,
                          "silence_duration_ms": 500}
    if td_type == OPENAI_SEMANTIC_VAD:
        td = {"type": td_type, "eagerness": "auto"}
    else:
        td["speech_duration_ms"] = 80 if semantic else 200
    if semantic:
        td["remove_filler_words"] = False
    td.update({"create_response": True, "interrupt_response": True})
    if _version_key(api_version) >= AUTO_TRUNCATE_VERSION:
        td["auto_truncate"] = False
    return td


def default_session(api_version: str = DEFAULT_API_VERSION, *, model: str | None = None,
                    agent: dict[str, Any] | None = None, session_id: str | None = None,
                    expires_at: int | None = None) -> dict[str, Any]:
    """The effective session at ``session.created``: every field the client may later change."""
    cascaded = is_cascaded(model, agent is not None)
    session: dict[str, Any] = {
        "id": session_id or new_id("sess"),
        "object": "realtime.session",
        "model": model,
        "modalities": ["text", "audio"],
        "instructions": None if agent is not None else "",
        "voice": copy.deepcopy(DEFAULT_AZURE_VOICE) if cascaded else DEFAULT_OPENAI_VOICE,
        "input_audio_format": "pcm16",
        "input_audio_sampling_rate": audio.BASE_RATE,
        "output_audio_format": "pcm16",
        "input_audio_noise_reduction": None,
        "input_audio_echo_cancellation": None,
        "input_audio_transcription": {"model": "azure-speech", "language": None} if cascaded else None,
        "turn_detection": turn_detection_defaults(SERVER_VAD, api_version),
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "expires_at": int(expires_at if expires_at is not None else time.time() + DEFAULT_SESSION_S),
    }
    if not has_expires_at(api_version):
        del session["object"], session["expires_at"]
    session["agent"] = None  # model mode ends with "agent": null (2025 trace)
    if agent is not None:
        session["agent"] = {"type": "agent", "name": agent.get("name", ""), "description": agent.get("description"),
                            "agent_id": agent.get("agent_id") or agent.get("name", ""),
                            "thread_id": agent.get("thread_id") or new_id("thread")}
    return session


# --- validation ------------------------------------------------------------------------------------


class _Checker:
    def __init__(self, api_version: str) -> None:
        self.api_version = api_version
        self.issues: list[SessionIssue] = []

    def add(self, param: str, message: str, code: str = "invalid_value", warning: bool = False) -> None:
        self.issues.append(SessionIssue(param, message, code, warning))

    def one_of(self, value: Any, allowed: tuple[str, ...], param: str) -> bool:
        if value not in allowed:
            shown = ", ".join(f"'{a}'" for a in allowed)
            self.add(param, f"Invalid value: {value!r}. Supported values are: {shown}.")
            return False
        return True

    def typed(self, value: Any, types: type | tuple[type, ...], param: str, what: str) -> bool:
        bad_bool = isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
        if not isinstance(value, types) or bad_bool:
            self.add(param, f"Invalid type for '{param}': expected {what}, but got {type(value).__name__}.",
                     "invalid_type")
            return False
        return True

    def number(self, value: Any, param: str, lo: float, hi: float, *, hi_open: bool = False,
               integer: bool = False) -> None:
        if not self.typed(value, int if integer else (int, float), param, "an integer" if integer else "a number"):
            return
        if value < lo:
            self.add(param, f"Invalid '{param}': {value} is below the minimum of {lo}.", "decimal_below_min_value")
        elif value > hi or (hi_open and value >= hi):
            bound = f"below {hi}" if hi_open else f"at most {hi}"
            self.add(param, f"Invalid '{param}': {value} must be {bound}.", "decimal_above_max_value")

    def boolean(self, value: Any, param: str) -> None:
        self.typed(value, bool, param, "a boolean")


def _check_turn_detection(c: _Checker, td: Any) -> None:
    p = "turn_detection"
    if td is None:
        return
    if not c.typed(td, dict, p, "an object or null"):
        return
    if "type" not in td:
        c.add(f"{p}.type", "Missing required parameter: 'session.turn_detection.type'.", "missing_required_parameter")
        return
    if not c.one_of(td["type"], TURN_DETECTION_TYPES, f"{p}.type"):
        return
    semantic = td["type"] in AZURE_SEMANTIC_VADS
    allowed = {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "speech_duration_ms",
               "end_of_utterance_detection", "create_response", "interrupt_response", "auto_truncate",
               "speech_duration_assistant_speaking_ms"}
    if semantic:
        allowed |= {"remove_filler_words", "languages", "appended_text_after_truncation"}
    if td["type"] == OPENAI_SEMANTIC_VAD:
        allowed = {"type", "eagerness", "create_response", "interrupt_response", "auto_truncate"}
    for key, value in td.items():
        q = f"{p}.{key}"
        if key not in allowed:
            c.add(q, f"Unknown parameter: 'session.{q}'.", "unknown_parameter")
        elif key == "threshold":
            c.number(value, q, 0.01, 1.0, hi_open=True)
        elif key in ("prefix_padding_ms", "silence_duration_ms", "speech_duration_ms",
                     "speech_duration_assistant_speaking_ms"):
            c.number(value, q, 0, 10_000, integer=True)
        elif key in ("create_response", "interrupt_response", "auto_truncate", "remove_filler_words"):
            c.boolean(value, q)
        elif key == "eagerness":
            c.one_of(value, EAGERNESS, q)
        elif key == "languages":
            if c.typed(value, list, q, "an array of strings") and not all(isinstance(v, str) for v in value):
                c.add(q, f"Invalid '{q}': expected an array of strings.", "invalid_type")
        elif key == "end_of_utterance_detection" and value is not None:
            if c.typed(value, dict, q, "an object"):
                c.one_of(value.get("model"), EOU_MODELS, f"{q}.model")
                if "threshold_level" in value:
                    c.one_of(value["threshold_level"], EOU_LEVELS, f"{q}.threshold_level")
                if "timeout_ms" in value:
                    c.number(value["timeout_ms"], f"{q}.timeout_ms", 0, 60_000)
    if td.get("auto_truncate") is True:
        if _version_key(c.api_version) < AUTO_TRUNCATE_VERSION:
            c.add(f"{p}.auto_truncate", f"'auto_truncate' needs api-version {AUTO_TRUNCATE_VERSION}-preview or later.")
        elif td.get("interrupt_response") is False:
            c.add(f"{p}.auto_truncate", "'auto_truncate' needs 'interrupt_response' to be true.")


def _check_voice(c: _Checker, voice: Any) -> None:
    if isinstance(voice, str):
        if not voice:
            c.add("voice", "Invalid 'voice': empty string.")
        return
    if not c.typed(voice, dict, "voice", "a string or an object"):
        return
    if c.one_of(voice.get("type"), VOICE_TYPES, "voice.type") and voice["type"] not in ("avatar-voice-sync",):
        if not isinstance(voice.get("name"), str) or not voice.get("name"):
            c.add("voice.name", "Missing required parameter: 'session.voice.name'.", "missing_required_parameter")
    if "temperature" in voice:
        c.number(voice["temperature"], "voice.temperature", 0.0, 1.0)


def _check_field(c: _Checker, key: str, value: Any, update: dict[str, Any]) -> None:
    if key == "modalities":
        if not c.typed(value, list, key, "an array"):
            return
        for i, m in enumerate(value):
            c.one_of(m, MODALITIES, f"modalities[{i}]")
        if not value or "text" not in value:
            c.add(key, "Invalid 'modalities': must include 'text' (supported: ['text'] or ['text', 'audio']).")
    elif key == "instructions":
        c.typed(value, str, key, "a string")
    elif key == "voice":
        _check_voice(c, value)
    elif key == "input_audio_format":
        c.one_of(value, INPUT_FORMATS, key)
    elif key == "input_audio_sampling_rate":
        if c.typed(value, int, key, "an integer"):
            try:
                audio.input_format(update.get("input_audio_format") or "pcm16", value)
            except ValueError as exc:
                c.add(key, str(exc))
    elif key == "output_audio_format":
        if c.typed(value, str, key, "a string"):
            try:
                audio.output_format(value)
            except ValueError as exc:
                c.add(key, str(exc))
    elif key == "turn_detection":
        _check_turn_detection(c, value)
    elif key == "input_audio_transcription":
        if value is not None and c.typed(value, dict, key, "an object or null"):
            model = value.get("model")
            if not isinstance(model, str) or not model:
                c.add(f"{key}.model", f"Missing required parameter: 'session.{key}.model'.", "missing_required_parameter")
            elif model not in TRANSCRIPTION_MODELS:
                c.add(f"{key}.model", f"Unknown transcription model {model!r} (known: {', '.join(TRANSCRIPTION_MODELS)}); "
                      "sent as is.", "unknown_model", warning=True)
            if value.get("language") is not None:
                c.typed(value["language"], str, f"{key}.language", "a string")
    elif key == "input_audio_noise_reduction":
        if value is not None and c.typed(value, dict, key, "an object or null"):
            c.one_of(value.get("type"), NOISE_REDUCTION_TYPES, f"{key}.type")
    elif key == "input_audio_echo_cancellation":
        if value is not None and c.typed(value, dict, key, "an object or null"):
            c.one_of(value.get("type", "server_echo_cancellation"), ("server_echo_cancellation",), f"{key}.type")
    elif key == "temperature":
        c.number(value, key, 0.0, 2.0)
    elif key == "max_response_output_tokens":
        if value != "inf":
            c.number(value, key, 1, 4096, integer=True)
    elif key == "reasoning_effort":
        c.one_of(value, REASONING_EFFORTS, key)
    elif key == "tools":
        if c.typed(value, list, key, "an array"):
            for i, tool in enumerate(value):
                if not isinstance(tool, dict) or tool.get("type") not in ("function", "mcp"):
                    c.add(f"tools[{i}].type", "Invalid tool: expected an object with type 'function' or 'mcp'.")
    elif key == "tool_choice":
        if isinstance(value, str):
            c.one_of(value, TOOL_CHOICES, key)
        else:
            c.typed(value, dict, key, "a string or an object")
    elif key == "parallel_tool_calls":
        c.boolean(value, key)
    elif key == "metadata":
        if value is not None and c.typed(value, dict, key, "an object"):
            if len(value) > 16:
                c.add(key, f"Invalid 'metadata': at most 16 pairs, got {len(value)}.")
            for k, v in value.items():
                if len(str(k)) > 64 or not isinstance(v, str) or len(v) > 512:
                    c.add(f"metadata.{k}", "Invalid 'metadata': keys up to 64 chars, string values up to 512.")
    elif key == "model":
        c.typed(value, str, key, "a string")


def validate_session(update: dict[str, Any], *, api_version: str = DEFAULT_API_VERSION,
                     agent: bool = False) -> list[SessionIssue]:
    """Check a ``session`` object on its own (no current state): the scenario validator's entry point."""
    c = _Checker(api_version)
    if not isinstance(update, dict):
        return [SessionIssue("", f"Invalid 'session': expected an object, got {type(update).__name__}.",
                             "invalid_type")]
    for key, value in update.items():
        if key in SERVER_FIELDS:
            continue
        if key not in SESSION_FIELDS:
            c.add(key, f"Unknown parameter: 'session.{key}'.", "unknown_parameter")
            continue
        _check_field(c, key, value, update)
    if agent and update.get("instructions"):
        c.add("instructions", "'instructions' cannot be set when the session is connected to an agent.")
    return c.issues


def merge_session(current: dict[str, Any], update: dict[str, Any], *,
                  api_version: str = DEFAULT_API_VERSION) -> tuple[dict[str, Any], list[SessionIssue]]:
    """Apply ``session.update``: only present fields change; any error leaves ``current`` untouched.

    Warnings (``SessionIssue.warning``: e.g. an unknown transcription model) do not stop the update;
    they are returned with the merged session.

    ``turn_detection`` is replaced as a whole, with the type's defaults filling the fields the
    update leaves out (OpenAI semantics; Voice Live's own behaviour is unconfirmed).
    """
    issues = validate_session(update, api_version=api_version, agent=current.get("agent") is not None)
    if isinstance(update, dict):
        model = update.get("model")
        if model is not None and current.get("model") is not None and model != current["model"]:
            issues.append(SessionIssue("model", f"The model cannot be changed during a session "
                                                f"(session model is '{current['model']}')."))
        if "input_audio_sampling_rate" in update and "input_audio_format" not in update:
            try:
                audio.input_format(current.get("input_audio_format") or "pcm16", update["input_audio_sampling_rate"])
            except (ValueError, TypeError) as exc:
                if not any(i.param == "input_audio_sampling_rate" for i in issues):
                    issues.append(SessionIssue("input_audio_sampling_rate", str(exc)))
    if any(not i.warning for i in issues):
        return current, issues
    merged = dict(current)
    for key, value in update.items():
        if key in SERVER_FIELDS:
            continue
        if key == "turn_detection" and value is not None:
            td = turn_detection_defaults(value["type"], api_version)
            td.update(copy.deepcopy(value))
            merged[key] = td
        elif key == "input_audio_format" and "input_audio_sampling_rate" not in update:
            merged[key] = value  # G.711 is 8 kHz; back to pcm16 without a rate means the default
            if value != "pcm16":
                merged["input_audio_sampling_rate"] = 8000
            elif current.get("input_audio_format") != "pcm16":
                merged["input_audio_sampling_rate"] = audio.BASE_RATE
        else:
            merged[key] = copy.deepcopy(value)
    return merged, issues  # warnings only


def input_format_of(session: dict[str, Any]) -> audio.AudioFormat:
    """The append format of an effective session (G.711 is always 8 kHz)."""
    fmt = session.get("input_audio_format") or "pcm16"
    rate = None if fmt != "pcm16" else session.get("input_audio_sampling_rate")
    return audio.input_format(fmt, rate)


def output_format_of(session: dict[str, Any]) -> audio.AudioFormat:
    return audio.output_format(session.get("output_audio_format") or "pcm16")
