"""Scenario files: what a run does, validated completely before any load starts.

``load_scenario(path)`` returns a typed :class:`Scenario` or raises :class:`ScenarioError` listing every
problem as ``file: field.path: what was expected``. YAML is read with ``yaml.safe_load`` only, and the
only substitution is ``${VAR}`` / ``${VAR:-default}`` from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from . import schema as s
from .scenario_targets import parse_targets
from .scenario_turns import check_expectations_can_pass, parse_turn
from .scenario_turns import check_fixtures as _check_fixtures
from .scenario_types import (MAX_USERS, SHAPES, AbortOn, AudioSpec, Expectations, LoadSpec,  # noqa: F401
                             Perturbation, Scenario, ShapeSpec, TargetSpec, TurnSpec)

ScenarioError = s.ValidationError


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
    targets = parse_targets(data, p)
    for t in targets:  # a profile file beside the scenario, like its fixtures (names: shipped profiles)
        t.profile = _beside(t.profile, file, Path.is_file) if t.profile.endswith((".yaml", ".yml")) else t.profile
    session = s.get_dict(data, "session", "", p)
    _check_session(session, p)
    tools, mcp_tools, tool_names = _tools(data, session, p)
    from .tts.spec import parse_speech, parse_variants

    speech = parse_speech(s.get_dict(data, "speech", "", p), p)
    variants = parse_variants(data, speech, p)
    conversation = [parse_turn(t, f"conversation[{i}]", p, tool_names, speech)
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
    check_expectations_can_pass(conversation, session, targets, p)
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
                       "stop_timeout", "shape", "max_pacing_lag_ms", "abort_on", "reconnect_margin"), "load", p)
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
                    or 10.0, abort_on=_abort_on(raw, p),
                    reconnect_margin_s=_reconnect_margin(raw, p))


def _reconnect_margin(raw: dict[str, Any], p: s.Problems) -> float:
    """Slack kept before a known session expiry (harness/client/expiry.py); 0 is allowed."""
    m = s.get_duration(raw, "reconnect_margin", "load", p, LoadSpec.reconnect_margin_s, lo=0, hi=3600)
    return LoadSpec.reconnect_margin_s if m is None else m


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


