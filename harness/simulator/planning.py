"""What is drawn for one response, up front and seeded: delays, pace, chunking, reply, fault, extras.

Every draw comes from ``rng_for(seed, session_index, seq, purpose)``, so the same seed gives the same
response whatever the event order or timing (the cascaded-vs-realtime test relies on it).
"""

from __future__ import annotations

import types
from typing import Any

from .actions import NS_PER_MS
from .profiles import Profile, rng_for
from .reply_bank import ReplyBank
from .responder import ResponsePlan

RESPONSE_FAULTS = ("disconnect_mid_response", "error_mid_turn", "stall_response", "malformed_frame")


def draw_plan(p: Profile, bank: ReplyBank, seed: int, index: int, seq: int, now_ns: int,
              speech_end_recv_ns: int | None, params: dict[str, Any], config: dict[str, Any],
              cascaded: bool) -> ResponsePlan:
    """The plan of response ``seq`` of session ``index``, decided at ``now_ns``."""
    rng = rng_for(seed, index, seq, "response")
    created_ms = p.response_created_delay_ms.sample(rng)
    first_ms = p.first_audio_delay_ms.sample(rng)
    pace = p.audio_pace.sample(rng)
    chunk_ms = max(10, int(round(p.chunk_ms.sample(rng) / 10.0)) * 10)
    target = p.reply_length_ms.sample(rng) if p.reply_length_ms is not None else None
    reply, keep_ms = bank.choose(rng_for(seed, index, seq, "reply"), target)
    pre = params.get("pre_generated_assistant_message")
    if isinstance(pre, dict):
        texts = [c.get("text") for c in pre.get("content") or [] if isinstance(c, dict) and c.get("text")]
        if texts:
            reply = types.SimpleNamespace(id=reply.id, text=" ".join(texts), samples=reply.samples,
                                          encoded=reply.encoded)
    jitter_rng = rng_for(seed, index, seq, "jitter")
    fault = next((f for f in RESPONSE_FAULTS if p.fault_hits(f, index, seq, seed)), None)
    fraction = min(1.0, max(0.0, p.faults.fault_point.sample(rng_for(seed, index, seq, "fault_point"))))
    created_at = now_ns + int(created_ms * NS_PER_MS)
    anchor = now_ns
    if p.first_audio_anchor == "speech_end" and speech_end_recv_ns is not None:
        anchor = speech_end_recv_ns
    stamps = "word" in (config.get("output_audio_timestamp_types") or ())
    visemes = "viseme_id" in ((config.get("animation") or {}).get("outputs") or ())
    return ResponsePlan(created_at_ns=created_at, first_at_ns=max(anchor + int(first_ms * NS_PER_MS), created_at),
                        pace=pace, chunk_ms=chunk_ms, jitter_ms=lambda: p.cadence_jitter_ms.sample(jitter_rng),
                        reply=reply, keep_ms=keep_ms, fault=fault, fault_fraction=fraction,
                        disconnect_abort=p.faults.disconnect_mode == "abort", malformed_kind=p.faults.malformed_kind,
                        rate_limits_event=p.rate_limits_event, warning_event=p.warning_event, cascaded=cascaded,
                        timestamps=p.audio_timestamp_events or stamps, visemes=p.viseme_events or visemes,
                        first_ms=first_ms, created_ms=created_ms)
