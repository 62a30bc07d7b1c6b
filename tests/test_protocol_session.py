"""Session defaults, merging and validation (harness/protocol/session.py): pure, no sockets."""

from __future__ import annotations

import pytest

from harness.protocol import session as ps


def test_defaults_depend_on_api_version_and_vad_type():
    old = ps.default_session("2025-10-01", model="gpt-realtime")
    new = ps.default_session("2026-07-15", model="gpt-realtime")
    assert old["turn_detection"]["prefix_padding_ms"] == 300
    assert new["turn_detection"]["prefix_padding_ms"] == 400
    assert ps.turn_detection_defaults("azure_semantic_vad", "2026-04-10")["prefix_padding_ms"] == 420
    assert ps.turn_detection_defaults("azure_semantic_vad", "2026-04-10")["speech_duration_ms"] == 80
    assert new["turn_detection"]["speech_duration_ms"] == 200
    assert "auto_truncate" not in old["turn_detection"] and new["turn_detection"]["auto_truncate"] is False
    # object/expires_at only from 2026-07-15 (a 2025-10-01 trace has neither); model mode ends with agent null
    assert new["object"] == "realtime.session" and new["expires_at"] > 0
    assert "object" not in old and "expires_at" not in old
    assert "expires_at" not in ps.default_session("2026-06-01-preview", model="gpt-realtime")
    for s in (old, new):
        assert s["id"].startswith("sess_") and list(s)[-1] == "agent" and s["agent"] is None
        assert s["modalities"] == ["text", "audio"] and s["input_audio_format"] == "pcm16"
        assert s["input_audio_sampling_rate"] == 24000 and s["output_audio_format"] == "pcm16"
        assert s["turn_detection"]["type"] == "server_vad" and s["turn_detection"]["silence_duration_ms"] == 500
        assert s["turn_detection"]["create_response"] is True and s["turn_detection"]["interrupt_response"] is True


def test_current_transcription_models_pass_and_unknown_ones_only_warn():
    for model in ("mai-transcribe-2", "mai-transcribe", "mai-transcribe-1", "azure-speech", "gpt-4o-transcribe"):
        assert ps.validate_session({"input_audio_transcription": {"model": model}}) == [], model
    (w,) = ps.validate_session({"input_audio_transcription": {"model": "my-asr"}})
    assert w.warning and w.param == "input_audio_transcription.model" and "my-asr" in w.message
    merged, issues = ps.merge_session(ps.default_session(model="gpt-4.1"),
                                      {"input_audio_transcription": {"model": "my-asr"}, "voice": "coral"})
    assert issues == [w] and merged["input_audio_transcription"]["model"] == "my-asr" and merged["voice"] == "coral"
    assert ps.validate_session({"input_audio_transcription": {"language": "en"}})[0].code == "missing_required_parameter"


def test_transcription_default_per_model_and_agent():
    assert ps.default_session(model="gpt-realtime")["input_audio_transcription"] is None
    assert ps.default_session(model="gpt-4.1")["input_audio_transcription"]["model"] == "azure-speech"
    agent = ps.default_session(agent={"name": "concierge"})
    assert agent["agent"]["type"] == "agent" and agent["agent"]["name"] == "concierge"
    assert agent["agent"]["thread_id"] and agent["instructions"] is None
    assert agent["input_audio_transcription"] is not None


def test_merge_changes_only_present_fields():
    cur = ps.default_session(model="gpt-realtime")
    merged, issues = ps.merge_session(cur, {"voice": "coral", "instructions": "be brief"})
    assert issues == []
    assert merged["voice"] == "coral" and merged["instructions"] == "be brief"
    assert merged["turn_detection"] == cur["turn_detection"] and merged["id"] == cur["id"]
    assert cur["voice"] == "alloy"  # the input is not mutated


def test_turn_detection_null_and_partial_objects():
    cur = ps.default_session(model="gpt-realtime")
    manual, issues = ps.merge_session(cur, {"turn_detection": None})
    assert issues == [] and manual["turn_detection"] is None
    sem, issues = ps.merge_session(manual, {"turn_detection": {"type": "azure_semantic_vad", "silence_duration_ms": 300}})
    assert issues == []
    td = sem["turn_detection"]
    assert td["silence_duration_ms"] == 300 and td["prefix_padding_ms"] == 420 and td["remove_filler_words"] is False


def test_g711_implies_8k_and_back():
    cur = ps.default_session(model="gpt-realtime")
    ulaw, _ = ps.merge_session(cur, {"input_audio_format": "g711_ulaw"})
    assert ulaw["input_audio_sampling_rate"] == 8000 and ps.input_format_of(ulaw).codec == "ulaw"
    back, _ = ps.merge_session(ulaw, {"input_audio_format": "pcm16"})
    assert back["input_audio_sampling_rate"] == 24000
    k16, _ = ps.merge_session(cur, {"input_audio_sampling_rate": 16000})
    assert ps.input_format_of(k16).sample_rate == 16000


@pytest.mark.parametrize("update, param, code", [
    ({"turn_detection": {"type": "telepathy"}}, "turn_detection.type", "invalid_value"),
    ({"turn_detection": {"type": "server_vad", "threshold": 1.0}}, "turn_detection.threshold", "decimal_above_max_value"),
    ({"turn_detection": {"type": "server_vad", "threshold": 0.0}}, "turn_detection.threshold", "decimal_below_min_value"),
    ({"turn_detection": {"type": "server_vad", "silence_duration_ms": -5}}, "turn_detection.silence_duration_ms",
     "decimal_below_min_value"),
    ({"turn_detection": {"type": "server_vad", "silence_duration_ms": "500"}}, "turn_detection.silence_duration_ms",
     "invalid_type"),
    ({"turn_detection": {"silence_duration_ms": 300}}, "turn_detection.type", "missing_required_parameter"),
    ({"turn_detection": {"type": "server_vad", "remove_filler_words": True}}, "turn_detection.remove_filler_words",
     "unknown_parameter"),
    ({"input_audio_format": "mp3"}, "input_audio_format", "invalid_value"),
    ({"input_audio_sampling_rate": 11025}, "input_audio_sampling_rate", "invalid_value"),
    ({"output_audio_format": "opus"}, "output_audio_format", "invalid_value"),
    ({"modalities": ["audio"]}, "modalities", "invalid_value"),
    ({"modalities": ["text", "smell"]}, "modalities[1]", "invalid_value"),
    ({"voice": {"type": "azure-standard"}}, "voice.name", "missing_required_parameter"),
    ({"max_response_output_tokens": 5000}, "max_response_output_tokens", "decimal_above_max_value"),
    ({"temperature": "hot"}, "temperature", "invalid_type"),
    ({"colour": "blue"}, "colour", "unknown_parameter"),
])
def test_invalid_updates_are_rejected_with_a_dotted_param(update, param, code):
    issues = ps.validate_session(update)
    assert issues and issues[0].param == param and issues[0].code == code, issues
    cur = ps.default_session(model="gpt-realtime")
    merged, issues2 = ps.merge_session(cur, update)
    assert merged is cur and issues2


def test_agent_rules_model_is_fixed_and_auto_truncate_needs_a_recent_version():
    agent = ps.default_session(agent={"name": "a"})
    _, issues = ps.merge_session(agent, {"instructions": "x"})
    assert [i.param for i in issues] == ["instructions"]
    _, issues = ps.merge_session(ps.default_session(model="gpt-realtime"), {"model": "gpt-4.1"})
    assert [i.param for i in issues] == ["model"]
    td = {"turn_detection": {"type": "server_vad", "auto_truncate": True}}
    assert ps.validate_session(td, api_version="2025-10-01")[0].param == "turn_detection.auto_truncate"
    assert ps.validate_session(td, api_version="2026-01-01-preview") == []


def test_accepts_documented_spellings_and_full_configs():
    ok = {
        "modalities": ["text", "audio"], "voice": {"type": "azure-standard", "name": "en-US-Ava:DragonHDLatestNeural",
                                                   "temperature": 0.8},
        "input_audio_format": "pcm16", "input_audio_sampling_rate": 16000, "output_audio_format": "pcm16-16000hz",
        "turn_detection": {"type": "azure_multilingual_semantic_vad", "threshold": 0.3, "languages": ["en", "es"],
                           "end_of_utterance_detection": {"model": "semantic_detection_v1", "threshold_level": "low"}},
        "input_audio_transcription": {"model": "mai-transcribe", "language": "en-US"},
        "input_audio_noise_reduction": {"type": "azure_deep_noise_suppression"},
        "tools": [{"type": "function", "name": "f", "parameters": {}}], "tool_choice": "auto",
        "max_response_output_tokens": "inf", "metadata": {"k": "v"}, "id": "sess_x", "object": "realtime.session",
    }
    assert ps.validate_session(ok) == []
    assert ps.validate_session({"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}) == []
