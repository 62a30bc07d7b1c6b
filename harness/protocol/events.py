"""Voice Live events as plain dicts: builders for both directions and one parser. No I/O.

The client (harness/client) and the simulator (harness/simulator) both build and parse events here,
so a field spelled wrong is spelled wrong in one place and the contract test with the official SDK
catches it. Names follow the OpenAI *beta* dialect that Voice Live speaks (``response.audio.delta``,
flat ``session``), see ../shared/voicelive-protocol.md §3 and §8.
"""

from __future__ import annotations

import itertools
import os
import secrets
from typing import Any

import orjson

# --- client -> server -------------------------------------------------------------------------
SESSION_UPDATE = "session.update"
INPUT_AUDIO_APPEND = "input_audio_buffer.append"
INPUT_AUDIO_COMMIT = "input_audio_buffer.commit"
INPUT_AUDIO_CLEAR = "input_audio_buffer.clear"
ITEM_CREATE = "conversation.item.create"
ITEM_TRUNCATE = "conversation.item.truncate"
ITEM_DELETE = "conversation.item.delete"
ITEM_RETRIEVE = "conversation.item.retrieve"
RESPONSE_CREATE = "response.create"
RESPONSE_CANCEL = "response.cancel"

# --- server -> client -------------------------------------------------------------------------
SESSION_CREATED = "session.created"
SESSION_UPDATED = "session.updated"
ERROR = "error"
WARNING = "warning"
SPEECH_STARTED = "input_audio_buffer.speech_started"
SPEECH_STOPPED = "input_audio_buffer.speech_stopped"
COMMITTED = "input_audio_buffer.committed"
CLEARED = "input_audio_buffer.cleared"
ITEM_CREATED = "conversation.item.created"
ITEM_TRUNCATED = "conversation.item.truncated"
ITEM_DELETED = "conversation.item.deleted"
ITEM_RETRIEVED = "conversation.item.retrieved"
TRANSCRIPTION_DELTA = "conversation.item.input_audio_transcription.delta"
TRANSCRIPTION_COMPLETED = "conversation.item.input_audio_transcription.completed"
TRANSCRIPTION_FAILED = "conversation.item.input_audio_transcription.failed"
RESPONSE_CREATED = "response.created"
RESPONSE_DONE = "response.done"
OUTPUT_ITEM_ADDED = "response.output_item.added"
OUTPUT_ITEM_DONE = "response.output_item.done"
CONTENT_PART_ADDED = "response.content_part.added"
CONTENT_PART_DONE = "response.content_part.done"
AUDIO_DELTA = "response.audio.delta"
AUDIO_DONE = "response.audio.done"
AUDIO_TRANSCRIPT_DELTA = "response.audio_transcript.delta"
AUDIO_TRANSCRIPT_DONE = "response.audio_transcript.done"
TEXT_DELTA = "response.text.delta"
TEXT_DONE = "response.text.done"
RATE_LIMITS_UPDATED = "rate_limits.updated"
AUDIO_TIMESTAMP_DELTA = "response.audio_timestamp.delta"
AUDIO_TIMESTAMP_DONE = "response.audio_timestamp.done"
VISEME_DELTA = "response.animation_viseme.delta"
VISEME_DONE = "response.animation_viseme.done"

#: response.done statuses (Response object ``status``).
RESPONSE_STATUSES = ("in_progress", "completed", "cancelled", "failed", "incomplete")


class ProtocolError(ValueError):
    """A frame that is not a Voice Live event (bad JSON, not an object, no ``type``)."""


# --- ids ----------------------------------------------------------------------------------------
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_counter = itertools.count(1)
_PID_TAG = secrets.token_hex(2)


def new_id(prefix: str) -> str:
    """Opaque ids shaped like the service's (``sess_6Zxvf6tkDngFpn3CwcvbTE``): prefix + 22 chars."""
    raw = secrets.token_bytes(16)
    n = int.from_bytes(raw, "big")
    chars = []
    for _ in range(22):
        n, r = divmod(n, 62)
        chars.append(_ALPHABET[r])
    return f"{prefix}_{''.join(chars)}"


def new_event_id() -> str:
    """Cheap, unique-enough event ids for the hot path (no randomness per event)."""
    return f"event_{_PID_TAG}{os.getpid():x}{next(_counter):x}"


# --- parsing ------------------------------------------------------------------------------------
def parse(data: str | bytes | bytearray | memoryview) -> dict[str, Any]:
    """Parse one WebSocket message into an event dict, or raise ProtocolError."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(event, dict):
        raise ProtocolError(f"event is a JSON {type(event).__name__}, not an object")
    etype = event.get("type")
    if not isinstance(etype, str) or not etype:
        raise ProtocolError("event has no string 'type'")
    return event


def dumps(event: dict[str, Any]) -> bytes:
    """Serialise an event to UTF-8 JSON bytes (what goes into a text frame)."""
    return orjson.dumps(event)


def base64_decoded_len(b64: str) -> int:
    """Length of the decoded payload from base64 length arithmetic: no decoding on the hot path."""
    n = len(b64)
    if n == 0:
        return 0
    pad = 2 if b64.endswith("==") else (1 if b64.endswith("=") else 0)
    return max(0, n * 3 // 4 - pad)  # "=" alone is not -1 bytes


# --- client builders ---------------------------------------------------------------------------
def session_update(session: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return _event(SESSION_UPDATE, event_id, session=session)


def append_message_prefix() -> bytes:
    """The constant head of an append message; the engine pre-builds whole frames from it once."""
    return b'{"type":"input_audio_buffer.append","audio":"'


def append_message(b64_audio: str) -> bytes:
    """A complete ``input_audio_buffer.append`` message (no event_id: nothing echoes it)."""
    return append_message_prefix() + b64_audio.encode("ascii") + b'"}'


def input_audio_commit(event_id: str | None = None) -> dict[str, Any]:
    return _event(INPUT_AUDIO_COMMIT, event_id)


def input_audio_clear(event_id: str | None = None) -> dict[str, Any]:
    return _event(INPUT_AUDIO_CLEAR, event_id)


def response_create(response: dict[str, Any] | None = None, event_id: str | None = None, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(extra)
    if response is not None:
        fields["response"] = response
    return _event(RESPONSE_CREATE, event_id, **fields)


def response_cancel(response_id: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    return _event(RESPONSE_CANCEL, event_id, **({"response_id": response_id} if response_id else {}))


def item_truncate(item_id: str, audio_end_ms: int, content_index: int = 0, event_id: str | None = None) -> dict[str, Any]:
    return _event(ITEM_TRUNCATE, event_id, item_id=item_id, content_index=content_index, audio_end_ms=int(audio_end_ms))


def item_create(item: dict[str, Any], previous_item_id: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"item": item}
    if previous_item_id is not None:
        fields["previous_item_id"] = previous_item_id
    return _event(ITEM_CREATE, event_id, **fields)


# --- server builders ---------------------------------------------------------------------------
def _event(etype: str, event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": etype}
    if event_id is not None:
        event["event_id"] = event_id
    event.update(fields)
    return event


def server_event(etype: str, **fields: Any) -> dict[str, Any]:
    """Every server event carries a server-generated ``event_id``."""
    return _event(etype, new_event_id(), **fields)


def error_event(message: str, *, code: str | None = None, param: str | None = None,
                error_type: str = "invalid_request_error", event_id: str | None = None) -> dict[str, Any]:
    """The service's error shape: most errors keep the session open."""
    return server_event(ERROR, error={"type": error_type, "code": code, "message": message,
                                      "param": param, "event_id": event_id})


def usage(input_audio_tokens: int = 0, input_text_tokens: int = 0, output_audio_tokens: int = 0,
          output_text_tokens: int = 0) -> dict[str, Any]:
    inp = input_audio_tokens + input_text_tokens
    out = output_audio_tokens + output_text_tokens
    return {
        "total_tokens": inp + out,
        "input_tokens": inp,
        "output_tokens": out,
        "input_token_details": {"cached_tokens": 0, "text_tokens": input_text_tokens,
                                "audio_tokens": input_audio_tokens, "image_tokens": 0,
                                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}},
        "output_token_details": {"text_tokens": output_text_tokens, "audio_tokens": output_audio_tokens,
                                 "reasoning_tokens": 0},
    }


def response_object(response_id: str, *, status: str = "in_progress", status_details: dict[str, Any] | None = None,
                    output: list[dict[str, Any]] | None = None, usage_: dict[str, Any] | None = None,
                    conversation_id: str | None = None, modalities: list[str] | None = None,
                    voice: Any = None, output_audio_format: str | None = None) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": status_details,
        "output": output or [],
        "usage": usage_ or usage(),
        "conversation_id": conversation_id,
        "modalities": modalities or ["text", "audio"],
        "voice": voice,
        "output_audio_format": output_audio_format,
    }


def message_item(item_id: str, role: str, content: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": status, "role": role,
            "content": content}
