"""The typed scenario: dataclasses the parser (harness/scenario.py) fills and the engine reads.

The comment on each attribute is its description in docs/scenarios.md (harness/scenario_docs.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .protocol import endpoint as ep

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
    reconnect_margin_s: float = 10.0  # slack before a known session expiry (client/expiry.py)


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
