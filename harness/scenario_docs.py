"""docs/scenarios.md, the scenario reference, generated from what the parser actually reads.

Fields, types, bounds, choices and defaults come from harness/declarations.py (the parser's own
accessor calls), examples from the shipped scenarios/*.yaml (else from the default or the type), and
descriptions from the comments on the dataclass attributes in harness/scenario_types.py plus a few
section notes below. A field someone adds to the parser therefore appears with nothing else to
edit; tests/test_scenario_docs.py fails until the shipped page is regenerated::

    python -m harness.scenario_docs          # rewrites docs/scenarios.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from .declarations import ITEMS, Field, Path as FieldPath, fields, walk, write_generated

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "docs" / "scenarios.md"
COMMAND = "python -m harness.scenario_docs"
#: What a section is for, where no dataclass comment says it.
NOTES = {
    "name": "run and report name (default: the file name without .yaml)",
    "description": "free text shown in the report",
    "target": "the one system under test: `embedded` (the simulator) or a Voice Live endpoint",
    "targets": "several systems under test (compared side by side); each item as `target`",
    "target.embedded": "true: the embedded simulator (also `endpoint: embedded`)",
    "target.type": "`embedded` is the same as `embedded: true`",
    "target.endpoint": "https://<resource>.services.ai.azure.com (or `embedded`; `${VAR:-embedded}` runs offline "
                       "until VAR is set)",
    "target.agent": "Foundry Agent Service mode instead of `model` (docs/azure.md)",
    "target.auth": "how to authenticate (docs/azure.md); secrets only through environment variables",
    "target.auth.kind": "entra (DefaultAzureCredential), api_key, token or none",
    "target.auth.api_key_env": "environment variable holding the key",
    "target.auth.token_env": "environment variable holding a bearer token",
    "session": "the Voice Live `session.update` body, checked against the protocol (harness/protocol/session.py)",
    "conversation": "the caller's script: one item per user turn (a fixture id, or a mapping)",
    "conversation[].fixture": "audio fixture id from audio_fixtures/manifest.yaml",
    "conversation[].expect": "per-turn expectations; a failed one fails the verdict (docs/metrics.md)",
    "conversation[].expect.transcript_contains": "string or list: words the input transcript must contain "
                                                 "(needs input transcription)",
    "conversation[].expect.response_contains": "string or list: words the response transcript must contain",
    "audio": "how the caller's audio is streamed",
    "load": "how many callers, for how long, in what shape",
    "load.duration": "how long new sessions start (sessions in flight finish)",
    "load.think_time": "pause between one user's sessions: a duration or {min, max}",
    "load.shape": "a shape name or a mapping with `type` and its parameters (below)",
    "thresholds": "CI gates: `[target:]metric[.stat] op number` (docs/reports.md)",
    "fixtures_dir": "where the fixture manifest and audio live",
    "target.name": "tags every record of this target; required to tell several targets apart",
    "target.api_version": "Voice Live api-version query parameter",
    "target.model": "model deployment (e.g. gpt-realtime, gpt-4o-mini) when not in agent mode",
    "target.region": "label for reports (and the default name)",
    "target.extra_query": "extra query parameters appended to the WebSocket URL",
    "target.open_timeout_s": "seconds to wait for the handshake and session.created",
    "target.ca_file": "PEM bundle to trust for wss:// (a private CA)",
    "target.auth.scope": "Entra ID token scope",
    "target.auth.tenant_id": "Entra ID tenant to sign in to",
    "target.auth.in_query": "send the credential as a query parameter instead of a header",
    "conversation[].manual_commit": "push-to-talk: commit the audio and ask for a response (turn_detection: null)",
    "conversation[].expect.max_first_audio_ms": "first audio latency limit for this turn (ms)",
    "conversation[].expect.max_vad_ms": "VAD latency limit for this turn (ms)",
    "conversation[].expect.max_wer": "word error rate limit of the input transcript",
    "audio.chunk_ms": "size of each audio frame sent, in ms (a multiple of 10)",
    "audio.trailing_silence_ms": "silence streamed after each utterance (the microphone stays open)",
    "audio.perturb": "degrade the caller's audio: noise, gain, lost chunks",
    "audio.perturb.snr_db": "mix noise at this signal-to-noise ratio",
    "audio.perturb.gain_db": "gain applied to the utterance",
    "load.users": "peak concurrent callers (`--users` overrides)",
    "load.spawn_rate": "callers started per second",
    "load.turn_timeout": "a started response that does not finish within this is a `timeout`",
    "load.stop_timeout": "at the end, how long sessions in flight may finish their turns",
    "load.shape.type": "the shape's name; its parameters sit beside it",
    "load.reconnect_margin": "slack kept before a known session expiry (`expires_at`, else `target.limits."
                             "max_session_minutes`): a turn whose expected length (utterance + the longest reply so "
                             "far) plus this would not fit is spoken on a new connection, opened between "
                             "turns (docs/azure.md)",
    "load.abort_on": "stop a run that cannot produce data, with the diagnosis at once (exit 3)",
    # speech synthesis (harness/tts, docs/speech.md)
    "conversation[].say": "words the caller says, synthesised before load starts (instead of `fixture`)",
    "conversation[].voice": "`engine:voice` for this line (piper:en_US-joe-medium, espeak:de, azure:<voice>); "
                            "wins over the variant's",
    "conversation[].rate": "speaking rate of this line (multiplies speech.rate and the variant's rate)",
    "speech": "defaults of say: lines and where their audio is cached",
    "speech.engine": "engine of voices written without one (default: piper when installed, else espeak)",
    "speech.voice": "default voice, `engine:voice`",
    "speech.rate": "default speaking rate (1.0 = the voice's own)",
    "speech.cache_dir": "speech cache, relative to the scenario file (default .voiceload-cache/tts; "
                        "$VOICELOAD_TTS_CACHE)",
    "speech.azure": "Azure AI Speech resource for azure: voices (REST, raw 24 kHz PCM)",
    "speech.azure.region": "the resource's region (https://<region>.tts.speech.microsoft.com)",
    "speech.azure.endpoint": "full text-to-speech URL instead of the region (custom domain, sovereign cloud)",
    "speech.azure.auth": "api_key (Ocp-Apim-Subscription-Key), entra or token (Authorization: Bearer)",
    "variants": "caller variants: a mapping of lists is a matrix of every combination, a list names each "
                "caller; each session is one caller, round-robin",
    "variants.voice": "voice(s) `engine:voice`",
    "variants.rate": "speaking rate(s)",
    "variants.noise": "background noise kind(s)",
    "variants.snr_db": "speech-to-noise ratio(s) of the noise, dB (default 10)",
    "variants.channel": "`g711`: through a mu-law telephone line (8 kHz)",
    "variants.gain_db": "level change(s), dB",
    "variants[].id": "the caller's name in records and reports",
    # quotas (harness/quota.py, docs/azure.md "Sizing a test against your quota")
    "target.limits": "the quotas of the target's resource, which callers pace and `voiceload plan` sizes against "
                     "(default: S0 for Azure hosts, the simulator profile's for embedded, none otherwise; "
                     "null = no limit)",
    "target.limits.connections_per_minute": "new connections per rolling minute (S0: 30); callers wait for "
                                            "budget instead of being refused",
    "target.limits.tokens_per_minute": "tokens per rolling minute (S0: 120,000); `voiceload plan` warns above it",
    "target.limits.max_session_minutes": "maximum session length (S0: 60); longer conversations reconnect and "
                                         "continue",
    "target.limits.window_s": "advanced, tests only: length of the rolling \"minute\" in seconds (60 on real "
                              "services)",
}
#: Defaults the parser computes (shown instead of what the probe document produced).
DEFAULTS = {"name": "the file name"}
#: Examples for fields no shipped scenario uses.
EXAMPLES = {
    "target.agent.name": "my-agent", "target.agent.project_name": "my-project",
    "target.auth.api_key_env": "AZURE_VOICELIVE_API_KEY", "target.auth.token_env": "VOICELIVE_TOKEN",
    "target.auth.scope": "https://ai.azure.com/.default", "target.auth.tenant_id": "00000000-0000-0000-0000-000000000000",
    "target.auth.in_query": True, "target.region": "eastus2", "target.extra_query": {"deployment": "prod"},
    "target.ca_file": "certs/ca.pem", "target.tls": True, "target.type": "embedded",
    "target.agent.version": "3", "target.agent.conversation_id": "conv_abc123", "target.agent.agent_id": "asst_abc123",
    "target.agent.authentication_identity_client_id": "00000000-0000-0000-0000-000000000000",
    "target.agent.foundry_resource_override": "my-foundry-resource", "target.agent.access_token_env": "AGENT_TOKEN",
    "conversation[].expect.response_contains": ["refund"], "conversation[].expect.tool": "get_weather",
    "conversation[].expect.args": {"city": "Paris"}, "tools[].name": "get_weather",
    "tools[].parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "tools[].executor.result": {"temp_c": 21}, "tools[].executor.error": "service unavailable",
    "target.limits": {"connections_per_minute": 30, "tokens_per_minute": 120000, "max_session_minutes": 60},
    "target.limits.connections_per_minute": 30, "target.limits.tokens_per_minute": 120000,
    "target.limits.max_session_minutes": 60, "target.limits.window_s": 60,
}


def _comments() -> dict[str, str]:
    """``attribute -> comment`` from the dataclasses of harness/scenario_types.py; names used twice are dropped."""
    src = (Path(__file__).resolve().parent / "scenario_types.py").read_text(encoding="utf-8")
    seen: dict[str, list[str]] = {}
    for m in re.finditer(r"^    (\w+): [^=\n]+(?:=[^#\n]*)?#\s*(.+)$", src, re.M):
        seen.setdefault(m.group(1), []).append(m.group(2).strip())
    return {k: v[0] for k, v in seen.items() if len(v) == 1}


def _examples() -> dict[str, Any]:
    """The first value each field has in the shipped scenarios (field name as in :attr:`Field.name`)."""
    out: dict[str, Any] = {}

    def visit(node: Any, name: str) -> None:
        if name and name not in out:
            out[name] = node
        if isinstance(node, dict):
            for k, v in node.items():
                visit(v, f"{name}.{k}" if name else str(k))
        elif isinstance(node, list):
            for v in node:
                visit(v, name + ITEMS)

    for p in sorted((ROOT / "scenarios").glob("*.yaml")):
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
        if isinstance(doc, dict):
            visit(doc, "")
    return out


def _type(f: Field) -> str:
    parts = []
    for kind, meta in f.kinds.items():
        if kind == "str" and meta.get("choices"):
            parts.append("one of " + ", ".join(f"`{c}`" for c in meta["choices"]))
            continue
        text = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "list",
                "mapping": "mapping", "duration": "duration (`90s`, `5m`, `1h30m` or seconds)"}.get(kind, kind)
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None or hi is not None:
            text += f" {'' if lo is None else _num(lo)}…{'' if hi is None else _num(hi)}"
        parts.append(text)
    if f.keys and "mapping" not in f.kinds:
        parts.append("mapping")
    return " or ".join(parts) or "value"


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _flow(value: Any, limit: int = 70) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False,
                          allow_unicode=True).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _synthetic(f: Field, tree: dict[FieldPath, Field]) -> Any:
    """An example for a field no shipped scenario uses and that has no default: the smallest valid value,
    or for a mapping its first two fields."""
    if f.keys:
        return {k: _synthetic(tree[f.path + (k,)], tree) if f.path + (k,) in tree else "…" for k in f.keys[:2]}
    for kind, meta in f.kinds.items():
        if kind == "str":
            return meta["choices"][0] if meta.get("choices") else ("MY_VARIABLE" if f.path[-1].endswith("_env")
                                                                    else "text")
        if kind in ("int", "float"):
            lo = meta.get("lo")
            return lo if lo is not None and lo > 0 else 1
        if kind == "duration":
            return "30s"
        if kind == "bool":
            return True
        if kind == "list":
            return []
    default = f.default()
    return default if default is not None else "text"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(f: Field, examples: dict[str, Any], comments: dict[str, str], tree: dict[FieldPath, Field]) -> str:
    name = f.name
    generic = re.sub(r"^targets\[\]", "target", name)
    default = f.default()
    example = examples.get(name, examples.get(generic, EXAMPLES.get(name, EXAMPLES.get(generic))))
    if example is None:
        example = default if default is not None else _synthetic(f, tree)
    desc = NOTES.get(name) or NOTES.get(generic) or comments.get(f.path[-1] if f.path else "", "") or comments.get(
        f"{f.path[-1]}_s" if f.path else "", "")
    shown = DEFAULTS.get(name) or ("" if default is None else f"`{_cell(_flow(default))}`")
    return (f"| `{name}` | {_cell(_type(f))} | {shown} | "
            f"`{_cell(_flow(example))}` | {_cell(desc)} |")


def _shapes() -> list[str]:
    from .shapes import _PARAMS

    rows = ["| shape | parameters |", "|---|---|"]
    for name, params in _PARAMS.items():
        rows.append(f"| `{name}` | " + (", ".join(f"`{k}` ({v})" for k, v in params.items()) or "—") + " |")
    return rows


def render(tree: dict[FieldPath, Field] | None = None) -> str:
    """The whole page (deterministic for a given parser and scenarios/)."""
    tree = tree if tree is not None else walk()
    examples, comments = _examples(), _comments()
    lines = [
        "# Scenario reference",
        "",
        f"<!-- generated by `{COMMAND}` from the parser's declarations (harness/declarations.py); do not edit "
        "by hand -->",
        "",
        "Every field a scenario file may hold, with its type, default and an example (from the shipped "
        "`scenarios/*.yaml` when one uses it). `voiceload validate FILE` checks a file completely and names "
        "the file and field of every problem; `${VAR}` / `${VAR:-default}` may stand for any value. "
        "`[]` marks the items of a list.",
        "",
        "| field | type | default | example | what it is |",
        "|---|---|---|---|---|",
    ]
    for f in fields(tree):
        if f.path and f.path[-1] != ITEMS:
            lines.append(_row(f, examples, comments, tree))
    lines += ["", "## Load shapes (`load.shape`)", "",
              "`load.shape` is a shape name or a mapping with `type` and that shape's parameters "
              "(harness/shapes.py):", ""] + _shapes() + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Write docs/scenarios.md (or the path given; ``-`` prints it)."""
    return write_generated(render, SHIPPED, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
