"""``voiceload init``: a commented starter scenario that validates and runs as written.

The file targets ``${VOICELOAD_ENDPOINT:-embedded}``: with the variable unset it runs on the embedded
simulator, with it set it load-tests the user's Voice Live resource without editing a line. It names
fixtures from the library shipped with the package, so it runs from any directory.
"""

from __future__ import annotations

from pathlib import Path

MODES = ("model", "agent")
USE_CASES = ("customer_service", "automotive", "tutor")
DEFAULT_NAME = "voiceload.yaml"

_TARGET = {
    "model": """\
  # Model mode: Voice Live hosts the model (gpt-realtime, gpt-4.1 cascaded, phi4-mm-realtime, ...).
  model: ${VOICELOAD_MODEL:-gpt-realtime}
""",
    "agent": """\
  # Agent mode: a Foundry agent answers; Voice Live brings the speech in and out.
  agent:
    name: ${VOICELOAD_AGENT_NAME:-my-agent}
    project_name: ${VOICELOAD_AGENT_PROJECT:-my-project}
""",
}

_SESSION = {
    "customer_service": """\
session:
  modalities: [text, audio]
  instructions: You are a concise, friendly customer-service agent for an online shop.
  voice: {type: azure-standard, name: en-US-Ava:DragonHDLatestNeural}
  # Semantic VAD decides when the caller has finished; silence_duration_ms is the end-of-turn pause.
  turn_detection: {type: azure_semantic_vad, threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500}
  input_audio_noise_reduction: {type: azure_deep_noise_suppression}
  input_audio_transcription: {model: azure-speech, language: en-US}   # needed for WER and transcript checks
""",
    "automotive": """\
session:
  modalities: [text, audio]
  voice: {type: azure-standard, name: en-US-Andrew:DragonHDLatestNeural}
  input_audio_format: pcm16
  input_audio_sampling_rate: 16000          # a car microphone at 16 kHz
  output_audio_format: pcm16_16000hz
  turn_detection: {type: server_vad, threshold: 0.6, prefix_padding_ms: 300, silence_duration_ms: 400}
  input_audio_noise_reduction: {type: azure_deep_noise_suppression}
  input_audio_transcription: {model: azure-speech, language: en-US}
""",
    "tutor": """\
session:
  modalities: [text, audio]
  instructions: You are a patient language tutor. Correct mistakes gently.
  voice: {type: azure-standard, name: en-US-Ava:DragonHDLatestNeural}
  turn_detection: null                      # push-to-talk: the caller commits each turn (manual_commit)
  input_audio_transcription: {model: azure-speech, language: "en-US,es-ES"}
""",
}

_CONVERSATION = {
    "customer_service": """\
conversation:
  # Each turn speaks one fixture (`voiceload fixtures list` shows the built-in ones; add your own
  # recordings with `voiceload fixtures add FILE --text "..."` in the directory of this file).
  - fixture: cs_order_status
    pause_ms: 800                           # caller silence before speaking
    expect: {transcript_contains: order, max_first_audio_ms: 3000}
  - fixture: cs_double_charge
    expect: {transcript_contains: charged}
  - fixture: cs_speak_agent
""",
    "automotive": """\
conversation:
  # Each turn speaks one fixture (`voiceload fixtures list` shows the built-in ones).
  - fixture: car_charging_station
    expect: {transcript_contains: charging}
  - fixture: car_temperature
    pause_ms: 1500
  - fixture: car_eta
audio:
  perturb: {snr_db: 15}                     # cabin noise at 15 dB SNR on every utterance
""",
    "tutor": """\
conversation:
  # Each turn speaks one fixture (`voiceload fixtures list` shows the built-in ones).
  - fixture: tutor_en_restaurant
    manual_commit: true
  - fixture: tutor_es_greeting
    manual_commit: true
    pause_ms: 1500
""",
}

_TEMPLATE = """\
{schema_line}# voiceload starter scenario: {use_case}, {mode} mode (written by `voiceload init`).
#
#   voiceload validate {file}         check every field before any load starts
#   voiceload run {file}              run it; prints where report.html is
#
# As written it runs against the simulator embedded in voiceload. To test your Voice Live resource,
# set VOICELOAD_ENDPOINT=https://<resource>.services.ai.azure.com and sign in with `az login`
# (auth kind entra), or use auth: {{kind: api_key, api_key_env: AZURE_VOICELIVE_API_KEY}}.
name: {name}
description: Starter {use_case} scenario ({mode} mode), a few callers for half a minute.
target:
  name: ${{VOICELOAD_TARGET_NAME:-embedded}}
  endpoint: ${{VOICELOAD_ENDPOINT:-embedded}}   # "embedded" = the built-in simulator
  profile: realistic                        # simulator personality: ideal, realistic, degraded, chaos
{target}  auth: {{kind: entra}}
{session}{conversation}load:
  users: 2                                  # peak concurrent callers
  spawn_rate: 1                             # callers started per second
  duration: 30s
  think_time: {{min: 1s, max: 2s}}            # pause between one caller's sessions
thresholds:                                 # a breach makes `voiceload run` exit 1
  - first_audio_ms.p95 <= 2500
  - completeness >= 0.95
"""


def starter(mode: str = "model", use_case: str = "customer_service", file: str = DEFAULT_NAME,
            schema_ref: str | None = None) -> str:
    """The starter scenario's text; ``schema_ref`` adds the editor's ``$schema`` line."""
    if mode not in MODES or use_case not in USE_CASES:
        raise ValueError(f"mode must be one of {MODES} and use case one of {USE_CASES}")
    schema_line = f"# yaml-language-server: $schema={schema_ref}\n" if schema_ref else ""
    return _TEMPLATE.format(schema_line=schema_line, use_case=use_case, mode=mode, file=file,
                            name=f"starter_{use_case}", target=_TARGET[mode], session=_SESSION[use_case],
                            conversation=_CONVERSATION[use_case])


def write_starter(path: str | Path | None, mode: str, use_case: str, *, force: bool = False,
                  schema_ref: str | None = None) -> Path:
    """Write the starter to ``path`` (a directory gets ``voiceload.yaml``); FileExistsError unless ``force``."""
    out = Path(path or DEFAULT_NAME)
    if out.is_dir():
        out = out / DEFAULT_NAME
    if out.exists() and not force:
        raise FileExistsError(f"{out}: already exists (use --force to overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(starter(mode, use_case, str(out), schema_ref), encoding="utf-8")
    return out
