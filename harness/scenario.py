"""Scenario files: what a run does, validated completely before any load starts.

``load_scenario(path)`` returns a typed :class:`Scenario` or raises :class:`ScenarioError` listing every
problem as ``file: field.path: what was expected``. YAML is read with ``yaml.safe_load`` only, and the
only substitution is ``${VAR}`` / ``${VAR:-default}`` from the environment.
"""

from __future__ import annotations

import datetime

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import schema as s
from .protocol import endpoint as ep
from .quota import parse_limits

ScenarioError = s.ValidationError

SHAPES = ("flat", "step", "spike", "soak", "breakpoint", "arrivals")
MAX_USERS = 20000  # beyond this a single run is a typo, not a test


@dataclass
class TargetSpec:
    """One system under test: the embedded simulator or a real Voice Live endpoint."""

    name: str
    embedded: bool = True
    profile: str = "realistic"  # simulator profile when embedded
    tls: bool = False  # embedded: serve wss:// with a throw-away local CA the callers trust
    target: ep.Target | None = None  # real endpoint when not embedded
    limits: dict[str, Any] | None = None  # target.limits as given (quota.merge_limits puts it over the defaults)


@dataclass
class Expectations:
    transcript_contains: list[str] = field(default_factory=list)
    response_contains: list[str] = field(default_factory=list)
    max_first_audio_ms: float | None = None
    max_vad_ms: float | None = None
    max_wer: float | None = None
    reason: str | None = None  # expected outcome, e.g. "cancelled" for the interrupted turn
    tool: Any = None  # tools.ToolExpect: the function the agent should call, and its arguments


@dataclass
class TurnSpec:
    fixture: str
    pause_ms: int = 600  # caller silence before speaking (after the previous response ended)
    barge_in_after_ms: int | None = None  # speak this long after the previous response's first audio
    manual_commit: bool = False
    expect: Expectations = field(default_factory=Expectations)
    # Speech synthesis (harness/tts): a say: line has no fixture until prepare_speech() makes one per
    # caller variant: variant_fixtures[i] = (fixture id, directory); fixture is variant 0's id.
    say: Any = None  # words the caller says, synthesised before load (harness.tts.spec.SayLine)
    variant_fixtures: list[tuple[str, str]] = field(default_factory=list)
    # Branching (harness/branching.py): the turn's id in records and gotos, where the caller goes next.
    id: str = ""
    goto: str | None = None  # unconditional jump after this turn: a turn id or "end"
    branches: list[Any] = field(default_factory=list)  # branching.Branch, tried in order on the response
    next: int | None = None  # index of the next turn when no branch is taken (None: the session ends)


@dataclass
class Perturbation:
    snr_db: float | None = None
    gain_db: float = 0.0
    drop_rate: float = 0.0  # fraction of chunks lost in transit (not sent; the clock goes on)


@dataclass
class AudioSpec:
    chunk_ms: int = 20
    room_tone_dbfs: float | None = None  # None = digital silence between utterances
    trailing_silence_ms: int = 1500
    perturb: Perturbation = field(default_factory=Perturbation)
    record_fraction: float = 0.0  # fraction of sessions saved as stereo WAV (caller L, agent R)


@dataclass
class ShapeSpec:
    type: str = "flat"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class AbortOn:
    """``load.abort_on``: when to stop a run that cannot produce data (harness/abort.py)."""

    refused_sessions: int = 3  # the first N sessions all refused with 401/403/404 → abort (0 = never)


@dataclass
class LoadSpec:
    users: int = 1
    spawn_rate: float = 1.0
    duration_s: float = 60.0
    sessions_per_user: int | None = None  # None: keep starting sessions until the duration ends
    think_time_s: tuple[float, float] = (0.0, 0.0)  # between sessions of one user
    turn_timeout_s: float = 20.0
    stop_timeout_s: float = 30.0
    shape: ShapeSpec = field(default_factory=ShapeSpec)
    max_pacing_lag_ms: float = 10.0  # turns streamed later than this are flagged valid=false
    abort_on: AbortOn = field(default_factory=AbortOn)


@dataclass
class Scenario:
    name: str
    file: str
    description: str
    targets: list[TargetSpec]
    session: dict[str, Any]
    conversation: list[TurnSpec]
    audio: AudioSpec
    load: LoadSpec
    thresholds: list[str]
    fixtures_dir: str = "audio_fixtures"
    max_turns: int | None = None  # turns per session when the conversation branches or loops
    tools: list[Any] = field(default_factory=list)  # tools.FunctionTool, answered by the caller
    mcp_tools: list[dict[str, Any]] = field(default_factory=list)  # MCP servers the service calls itself
    speech: Any = None  # defaults of say: lines and their cache (harness.tts.spec.SpeechSpec)
    variants: list[Any] = field(default_factory=list)  # callers, one per session (harness.tts.spec.Variant)

    @property
    def manual(self) -> bool:
        """turn_detection: null means push-to-talk: the client commits and asks for responses."""
        return "turn_detection" in self.session and self.session["turn_detection"] is None


def load_scenario(path: str | os.PathLike[str], *, env: dict[str, str] | None = None,
                  check_fixtures: bool = True) -> Scenario:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(file, [("", f"cannot read file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(file, [("", f"not UTF-8 text (byte {exc.start}: {exc.reason}); is this a scenario "
                                         f"file?")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ScenarioError(file, [("", f"invalid YAML: {where}{getattr(exc, 'problem', exc)}")]) from None
    return parse_scenario(data, file, env=env, check_fixtures=check_fixtures)


def parse_scenario(data: Any, file: str, *, env: dict[str, str] | None = None,
                   check_fixtures: bool = True) -> Scenario:
    p = s.Problems([])
    if not isinstance(data, dict):
        raise ScenarioError(file, [("", f"expected a mapping at the top level, got {type(data).__name__}")])
    if s.too_large(data):
        raise ScenarioError(file, [("", f"too large: more than {s.MAX_NODES} values once YAML aliases are "
                                        f"expanded")])
    data = s.interpolate(data, "", p, env)
    s.check_keys(data, ("name", "description", "target", "targets", "session", "conversation", "audio", "load",
                        "thresholds", "fixtures_dir", "tools", "speech", "variants", "max_turns"), "", p)
    name = s.get_str(data, "name", "", p, Path(file).stem) or Path(file).stem
    fixtures_dir = _beside(s.get_str(data, "fixtures_dir", "", p, "audio_fixtures") or "audio_fixtures", file)
    targets = _targets(data, p)
    for t in targets:  # a profile file beside the scenario, like its fixtures (names: shipped profiles)
        t.profile = _beside(t.profile, file, Path.is_file) if t.profile.endswith((".yaml", ".yml")) else t.profile
    session = s.get_dict(data, "session", "", p)
    _check_session(session, p)
    tools, mcp_tools, tool_names = _tools(data, session, p)
    from .tts.spec import parse_speech, parse_variants

    speech = parse_speech(s.get_dict(data, "speech", "", p), p)
    variants = parse_variants(data, speech, p)
    conversation = [_turn(t, f"conversation[{i}]", p, tool_names, speech)
                    for i, t in enumerate(s.get_list(data, "conversation", "", p))]
    if not conversation and "conversation" not in [k for k, _ in p.items]:
        p.add("conversation", "at least one turn is required")
    from .branching import link

    turn_paths, max_turns = link(conversation, data, p)  # inline branch turns join the list, after these
    if conversation and conversation[0].barge_in_after_ms is not None:
        p.add("conversation[0].barge_in_after_ms", "the first turn has no previous response to interrupt")
    manual = "turn_detection" in session and session["turn_detection"] is None
    for t, tpath in zip(conversation, turn_paths):
        if t.manual_commit and not manual:
            p.add(f"{tpath}.manual_commit", "needs session.turn_detection: null (server VAD commits itself)")
        if manual and t.barge_in_after_ms is not None:
            p.add(f"{tpath}.barge_in_after_ms", "barge-in needs server VAD (turn_detection is null)")
    _check_expectations_can_pass(conversation, session, targets, p)
    audio = _audio(s.get_dict(data, "audio", "", p), p)
    load = _load(s.get_dict(data, "load", "", p), p)
    thresholds = _thresholds(s.get_list(data, "thresholds", "", p), p)
    if check_fixtures and conversation:
        _check_fixtures(conversation, fixtures_dir, file, p, turn_paths)
    if p:
        raise ScenarioError(file, p.items)
    return Scenario(name=name, file=file, description=s.get_str(data, "description", "", p, "") or "",
                    targets=targets, session=session, conversation=conversation, audio=audio, load=load,
                    thresholds=thresholds, fixtures_dir=fixtures_dir, tools=tools, mcp_tools=mcp_tools,
                    speech=speech, variants=variants, max_turns=max_turns)


def _tools(data: dict[str, Any], session: dict[str, Any], p: s.Problems) -> tuple[list[Any], list[Any], list[str] | None]:
    """Top-level ``tools:`` (function tools with executors, MCP servers); names expectations may use."""
    from .tools import parse_tools

    if data.get("tools") and session.get("tools"):
        p.add("session.tools", "give tools at the top level (with executors), not in session")
    elif isinstance(session.get("tools"), list):
        for i, t in enumerate(session["tools"]):
            if isinstance(t, dict) and t.get("type") == "function":
                p.add(f"session.tools[{i}]", "a function tool needs an executor to be answered: declare it in the "
                                             "top-level tools: list")
    functions, mcp = parse_tools(s.get_list(data, "tools", "", p), p)
    if not functions and not mcp:
        return functions, mcp, None  # no tools declared: an agent's own actions may have any name
    names: list[str] | None = [f.name for f in functions]
    for m in mcp:
        if "allowed_tools" not in m:
            names = None  # an MCP server without allowed_tools may serve any name
            break
        names = (names or []) + list(m["allowed_tools"])
    return functions, mcp, names


def _check_expectations_can_pass(conversation: list[TurnSpec], session: dict[str, Any], targets: list[TargetSpec],
                                 p: s.Problems) -> None:
    """Refuse expectations that no run could ever meet: a gate that always fails is a typo, not a test."""
    for i, t in enumerate(conversation):
        if t.expect.transcript_contains and not _transcribes(session, targets):
            p.add(f"conversation[{i}].expect.transcript_contains", "can never pass: input transcription is off "
                  "(set session.input_audio_transcription, e.g. {model: azure-speech}; realtime models and the "
                  "embedded simulator start without it)")
        if t.expect.reason == "cancelled":
            nxt = conversation[i + 1] if i + 1 < len(conversation) else None
            if nxt is None or nxt.barge_in_after_ms is None:
                p.add(f"conversation[{i}].expect.reason", "can never pass: 'cancelled' needs the next turn to "
                      "interrupt this one (conversation[" + str(i + 1) + "].barge_in_after_ms), and "
                      + ("there is no next turn" if nxt is None else "it has none"))


def _transcribes(session: dict[str, Any], targets: list[TargetSpec]) -> bool:
    """Whether input transcripts will arrive: configured explicitly, or on by default for every target
    (cascaded models and agents; realtime models and the embedded simulator start with it off)."""
    if "input_audio_transcription" in session:
        return session["input_audio_transcription"] is not None
    from .protocol.session import is_realtime_model

    return bool(targets) and all(
        not t.embedded and t.target is not None and (t.target.agent is not None or not is_realtime_model(t.target.model))
        for t in targets)


def _targets(data: dict[str, Any], p: s.Problems) -> list[TargetSpec]:
    if "target" in data and "targets" in data:
        p.add("targets", "give either target or targets, not both")
        return []
    if "targets" in data:
        raw = s.get_list(data, "targets", "", p)
        if not raw and "targets" not in [k for k, _ in p.items]:
            p.add("targets", "at least one target is required")
        specs = [_target(t, f"targets[{i}]", p) for i, t in enumerate(raw)]
        names = [t.name for t in specs]
        for i, n in enumerate(names):
            if names.index(n) != i:
                p.add(f"targets[{i}].name", f"duplicate target name {n!r}: names tag every record")
        return specs
    return [_target(data.get("target", "embedded"), "target", p)]


def _target(raw: Any, path: str, p: s.Problems) -> TargetSpec:
    if raw == "embedded" or raw is None:
        return TargetSpec(name="embedded")
    if not isinstance(raw, dict):
        p.add(path, f"expected 'embedded' or a mapping with endpoint/model/agent/auth, got {raw!r}")
        return TargetSpec(name="embedded")
    if raw.get("embedded") or raw.get("type") == "embedded" or raw.get("endpoint") == "embedded":
        # endpoint: ${EASTUS2_ENDPOINT:-embedded} runs offline on the simulator, on Azure when the variable is set
        s.check_keys(raw, ("name", "embedded", "type", "profile", "endpoint", "api_version", "model", "agent",
                           "auth", "region", "extra_query", "open_timeout_s", "limits", "tls"), path, p)
        tls = raw.get("tls", False)
        if not isinstance(tls, bool):
            p.add(s.join(path, "tls"), f"expected true or false, got {tls!r}")
            tls = False
        return TargetSpec(name=s.get_str(raw, "name", path, p, "embedded") or "embedded", embedded=True,
                          profile=s.get_str(raw, "profile", path, p, "realistic") or "realistic",
                          limits=parse_limits(raw.get("limits"), s.join(path, "limits"), p), tls=tls)
    s.check_keys(raw, ("name", "endpoint", "api_version", "model", "agent", "auth", "region", "extra_query",
                       "open_timeout_s", "type", "profile", "limits", "ca_file"), path, p)
    if isinstance(raw.get("api_version"), datetime.date):  # api_version: 2026-07-15 unquoted is a YAML date
        raw = {**raw, "api_version": raw["api_version"].isoformat()}
    endpoint = s.get_str(raw, "endpoint", path, p)
    if not endpoint:
        p.add(s.join(path, "endpoint"), "required for a non-embedded target (or write target: embedded)")
        endpoint = ""
    agent = None
    if "agent" in raw:
        a = s.get_dict(raw, "agent", path, p)
        apath = s.join(path, "agent")
        s.check_keys(a, ("name", "project_name", "version", "conversation_id", "authentication_identity_client_id",
                         "foundry_resource_override", "agent_id", "access_token_env"), apath, p)
        agent = ep.AgentConfig(**{k: (str(v) if v is not None else None) for k, v in a.items()
                                  if k in ep.AgentConfig.__dataclass_fields__})
    auth_raw = s.get_dict(raw, "auth", path, p)
    s.check_keys(auth_raw, ("kind", "api_key_env", "token_env", "scope", "tenant_id", "in_query"),
                 s.join(path, "auth"), p)
    kind = s.get_str(auth_raw, "kind", s.join(path, "auth"), p, "entra", choices=("none", "api_key", "entra", "token"))
    auth = ep.AuthConfig(**{**{k: v for k, v in auth_raw.items() if k in ep.AuthConfig.__dataclass_fields__},
                            "kind": kind or "entra"})
    extra = s.get_dict(raw, "extra_query", path, p)
    target = ep.Target(name=s.get_str(raw, "name", path, p) or s.get_str(raw, "region", path, p) or "target",
                       endpoint=endpoint,
                       api_version=s.get_str(raw, "api_version", path, p, ep.DEFAULT_API_VERSION)
                       or ep.DEFAULT_API_VERSION,
                       model=s.get_str(raw, "model", path, p), agent=agent, auth=auth,
                       region=s.get_str(raw, "region", path, p),
                       extra_query={str(k): str(v) for k, v in extra.items()},
                       open_timeout_s=s.get_float(raw, "open_timeout_s", path, p, 30.0, lo=0.1, hi=600) or 30.0,
                       ca_file=s.get_str(raw, "ca_file", path, p) or None)
    if endpoint:
        for problem in target.validate():
            p.add(path if ":" not in problem else s.join(path, problem.split(":", 1)[0].removeprefix("target.")),
                  problem.split(":", 1)[-1].strip())
    return TargetSpec(name=target.name, embedded=False, target=target,
                      limits=parse_limits(raw.get("limits"), s.join(path, "limits"), p))


def _check_session(session: dict[str, Any], p: s.Problems) -> None:
    try:
        from .protocol.session import validate_session
    except ImportError:  # pragma: no cover - the shared validator ships with the simulator
        return
    for issue in validate_session(session):
        if not issue.warning:  # warnings (unknown but legal values) never block: see session_warnings
            p.add(s.join("session", issue.param) if issue.param else "session", issue.message)


def session_warnings(scenario: Any) -> list[str]:
    """``session.<field>: message`` for values voiceload does not know but the service may (never refused)."""
    from .protocol.session import validate_session

    return [f"{s.join('session', i.param)}: {i.message}" for i in validate_session(scenario.session) if i.warning]


def _turn(raw: Any, path: str, p: s.Problems, tool_names: list[str] | None = None,
          speech: Any = None) -> TurnSpec:
    if isinstance(raw, str):
        raw = {"fixture": raw}
    if not isinstance(raw, dict):
        p.add(path, f"expected a mapping with at least 'fixture', got {raw!r}")
        return TurnSpec(fixture="")
    s.check_keys(raw, ("fixture", "pause_ms", "barge_in_after_ms", "manual_commit", "expect", "say", "voice", "rate",
                       "id", "goto", "branches"), path, p)
    from .tts.spec import parse_say

    say = parse_say(raw, path, speech, p)
    fixture = s.get_str(raw, "fixture", path, p)
    if not fixture and say is None and "say" not in raw:
        p.add(s.join(path, "fixture"), "required: a fixture id from audio_fixtures/manifest.yaml (or say: \"the "
                                       "words\" to synthesise them)")
    e = s.get_dict(raw, "expect", path, p)
    epath = s.join(path, "expect")
    s.check_keys(e, ("transcript_contains", "response_contains", "max_first_audio_ms", "max_vad_ms", "max_wer",
                     "reason", "tool", "args", "args_match"), epath, p)

    def strings(key: str) -> list[str]:
        v = e.get(key)
        if v is None:
            return []
        if isinstance(v, str):
            return [v]
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return v
        p.add(s.join(epath, key), "expected a string or a list of strings")
        return []

    from .records import REASONS

    expect = Expectations(transcript_contains=strings("transcript_contains"),
                          response_contains=strings("response_contains"),
                          max_first_audio_ms=s.get_float(e, "max_first_audio_ms", epath, p, lo=1),
                          max_vad_ms=s.get_float(e, "max_vad_ms", epath, p, lo=1),
                          max_wer=s.get_float(e, "max_wer", epath, p, lo=0, hi=10),
                          reason=s.get_str(e, "reason", epath, p, choices=REASONS))
    from .tools import parse_expect

    expect.tool = parse_expect(e, epath, p, tool_names)
    spec = TurnSpec(fixture=fixture or "", pause_ms=s.get_int(raw, "pause_ms", path, p, 600, lo=0, hi=600_000) or 0,
                    barge_in_after_ms=s.get_int(raw, "barge_in_after_ms", path, p, None, lo=0, hi=60_000),
                    manual_commit=s.get_bool(raw, "manual_commit", path, p, False), expect=expect, say=say)
    from .branching import parse_links

    parse_links(spec, raw, path, p, lambda r, q: _turn(r, q, p, tool_names, speech))
    return spec



def _audio(raw: dict[str, Any], p: s.Problems) -> AudioSpec:
    s.check_keys(raw, ("chunk_ms", "room_tone_dbfs", "trailing_silence_ms", "perturb", "record_fraction"), "audio", p)
    chunk = s.get_int(raw, "chunk_ms", "audio", p, 20, lo=10, hi=200) or 20
    if chunk % 10:
        p.add("audio.chunk_ms", f"must be a multiple of 10 ms (VAD frames are 10 ms), got {chunk}")
    pr = s.get_dict(raw, "perturb", "audio", p)
    s.check_keys(pr, ("snr_db", "gain_db", "drop_rate"), "audio.perturb", p)
    perturb = Perturbation(snr_db=s.get_float(pr, "snr_db", "audio.perturb", p, None, lo=-10, hi=80),
                           gain_db=s.get_float(pr, "gain_db", "audio.perturb", p, 0.0, lo=-40, hi=20) or 0.0,
                           drop_rate=s.get_float(pr, "drop_rate", "audio.perturb", p, 0.0, lo=0, hi=0.5) or 0.0)
    return AudioSpec(chunk_ms=chunk,
                     room_tone_dbfs=s.get_float(raw, "room_tone_dbfs", "audio", p, None, lo=-100, hi=-20),
                     trailing_silence_ms=s.get_int(raw, "trailing_silence_ms", "audio", p, 1500, lo=0, hi=60_000) or 0,
                     perturb=perturb,
                     record_fraction=s.get_float(raw, "record_fraction", "audio", p, 0.0, lo=0, hi=1) or 0.0)


def _load(raw: dict[str, Any], p: s.Problems) -> LoadSpec:
    s.check_keys(raw, ("users", "spawn_rate", "duration", "sessions_per_user", "think_time", "turn_timeout",
                       "stop_timeout", "shape", "max_pacing_lag_ms", "abort_on"), "load", p)
    think = raw.get("think_time", 0)
    think_range = (0.0, 0.0)
    if isinstance(think, dict):
        s.check_keys(think, ("min", "max"), "load.think_time", p)
        lo = s.get_duration(think, "min", "load.think_time", p, 0.0) or 0.0
        hi = s.get_duration(think, "max", "load.think_time", p, lo) or lo
        if hi < lo:
            p.add("load.think_time.max", f"must be ≥ min ({lo}s)")
        think_range = (lo, max(lo, hi))
    else:
        t = s.get_duration(raw, "think_time", "load", p, 0.0) or 0.0
        think_range = (t, t)
    shape_raw = raw.get("shape", {"type": "flat"})
    if isinstance(shape_raw, str):
        shape_raw = {"type": shape_raw}
    if not isinstance(shape_raw, dict):
        p.add("load.shape", "expected a shape name or a mapping with 'type'")
        shape_raw = {"type": "flat"}
    stype = s.get_str(shape_raw, "type", "load.shape", p, "flat", choices=SHAPES) or "flat"
    shape = ShapeSpec(type=stype, params={k: v for k, v in shape_raw.items() if k != "type"})
    from .shapes import validate_shape

    for path, msg in validate_shape(shape, "load.shape"):
        p.add(path, msg)
    return LoadSpec(users=s.get_int(raw, "users", "load", p, 1, lo=1, hi=MAX_USERS) or 1,
                    spawn_rate=s.get_float(raw, "spawn_rate", "load", p, 1.0, lo=0.01, hi=1000) or 1.0,
                    duration_s=s.get_duration(raw, "duration", "load", p, 60.0, lo=1, hi=7 * 24 * 3600) or 60.0,
                    sessions_per_user=s.get_int(raw, "sessions_per_user", "load", p, None, lo=1, hi=1_000_000),
                    think_time_s=think_range,
                    turn_timeout_s=s.get_duration(raw, "turn_timeout", "load", p, 20.0, lo=1, hi=600) or 20.0,
                    stop_timeout_s=s.get_duration(raw, "stop_timeout", "load", p, 30.0, lo=0, hi=3600) or 30.0,
                    shape=shape,
                    max_pacing_lag_ms=s.get_float(raw, "max_pacing_lag_ms", "load", p, 10.0, lo=0.1, hi=10_000)
                    or 10.0, abort_on=_abort_on(raw, p))


def _abort_on(raw: dict[str, Any], p: s.Problems) -> AbortOn:
    a = s.get_dict(raw, "abort_on", "load", p)
    s.check_keys(a, ("refused_sessions",), "load.abort_on", p)
    n = s.get_int(a, "refused_sessions", "load.abort_on", p, AbortOn.refused_sessions, lo=0, hi=100_000)
    return AbortOn(refused_sessions=AbortOn.refused_sessions if n is None else n)


def _thresholds(raw: list[Any], p: s.Problems) -> list[str]:
    out: list[str] = []
    try:
        from .report.check import parse_threshold
    except ImportError:  # pragma: no cover
        parse_threshold = None
    for i, t in enumerate(raw):
        if not isinstance(t, str):
            p.add(f"thresholds[{i}]", f"expected a string like 'first_audio_ms.p95 <= 1200', got {t!r}")
            continue
        if parse_threshold is not None:
            try:
                parse_threshold(t)
            except ValueError as exc:
                p.add(f"thresholds[{i}]", str(exc))
                continue
        out.append(t)
    return out


def _beside(value: str, file: str, exists: Any = Path.is_dir) -> str:
    """User files live beside the user's scenarios: a relative ``fixtures_dir`` (or profile file) is looked up
    next to the scenario file first, then in the working directory; fixture ids the user's directory lacks
    come from the shipped library (``fixtures.library``), so an installed voiceload runs from anywhere."""
    beside = Path(file).parent / value
    return value if Path(value).is_absolute() or not exists(beside) else os.path.abspath(beside)


def _check_fixtures(conversation: list[TurnSpec], fixtures_dir: str, file: str, p: s.Problems,
                    paths: list[str] | None = None) -> None:
    from .fixtures import FixtureError, library

    try:
        manifest = library(fixtures_dir)
    except FixtureError as exc:
        p.add("fixtures_dir", str(exc))
        return
    for i, turn in enumerate(conversation):
        if turn.fixture and turn.fixture not in manifest:
            known = ", ".join(sorted(manifest)[:8])
            where = paths[i] if paths else f"conversation[{i}]"
            p.add(f"{where}.fixture", f"unknown fixture {turn.fixture!r} (known: {known}, ...)")
