"""``voiceload plan``: what a scenario will ask of each target's quotas, and what it will cost, before any load.

Per target: the ramp time the connection quota imposes (N new connections per rolling window, so
opening P sessions takes ``(ceil(P / N) - 1)`` windows at best), the peak concurrent sessions, the
tokens per minute at that peak against the quota (audio tokens: ~10 per second in, ~20 out, with
the caller's microphone open for the whole session), total audio minutes and an estimated cost
from a price table (harness/prices.yaml, or ``--prices FILE``). It is an estimate: reply lengths
are an assumption (in the price file), text tokens are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .limits import INPUT_AUDIO_TOKENS_PER_S, OUTPUT_AUDIO_TOKENS_PER_S, Limits

PRICES_FILE = Path(__file__).resolve().parent / "prices.yaml"
CONNECT_S = 0.5  # handshake + session.update, per session


class PriceError(ValueError):
    """A price table that does not validate; the message names the file and the field."""


@dataclass
class Prices:
    """USD per 1M tokens by model (``default`` for any other), and the assumptions of the estimate."""

    file: str
    models: dict[str, dict[str, float]]
    reply_audio_s: float = 4.0
    first_audio_s: float = 1.0
    notes: list[str] = field(default_factory=list)

    def for_model(self, model: str | None) -> tuple[str, dict[str, float]]:
        key = model if model in self.models else "default"
        return key, self.models[key]


def load_prices(path: str | Path | None = None) -> Prices:
    file = str(path or PRICES_FILE)
    try:
        data = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PriceError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PriceError(f"{file}: invalid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise PriceError(f"{file}: models: expected a mapping of model name -> prices per 1M tokens")
    models: dict[str, dict[str, float]] = {}
    for name, row in data["models"].items():
        if not isinstance(row, dict):
            raise PriceError(f"{file}: models.{name}: expected a mapping with audio_input and audio_output")
        out = {}
        for key in ("audio_input", "audio_output"):
            v = row.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise PriceError(f"{file}: models.{name}.{key}: expected a price ≥ 0 in USD per 1M tokens, got {v!r}")
            out[key] = float(v)
        models[str(name)] = out
    if "default" not in models:
        raise PriceError(f"{file}: models.default: required (the price of any model not listed)")
    a = data.get("assumptions") or {}
    if not isinstance(a, dict):
        raise PriceError(f"{file}: assumptions: expected a mapping")
    try:
        reply = float(a.get("reply_audio_s", 4.0))
        first = float(a.get("first_audio_s", 1.0))
    except (TypeError, ValueError):
        raise PriceError(f"{file}: assumptions: reply_audio_s and first_audio_s must be numbers of seconds") from None
    return Prices(file=file, models=models, reply_audio_s=reply, first_audio_s=first)


@dataclass
class TargetPlan:
    target: str
    model: str
    limits: Limits
    peak: int  # concurrent sessions on this target at the peak
    sessions: float  # sessions over the whole run
    session_s: float  # estimated length of one session
    shape_ramp_s: float  # what the load shape alone takes to reach the peak
    quota_ramp_s: float  # what the connection quota imposes to open the peak
    new_per_min: float  # new sessions per minute needed to hold the peak
    tokens_per_min: float  # at the peak
    audio_in_min: float
    audio_out_min: float
    cost_usd: float
    price_key: str
    warnings: list[str] = field(default_factory=list)

    @property
    def ramp_s(self) -> float:
        return max(self.shape_ramp_s, self.quota_ramp_s)


@dataclass
class ScenarioPlan:
    scenario: str
    file: str
    duration_s: float
    targets: list[TargetPlan]
    prices: Prices

    @property
    def cost_usd(self) -> float:
        return sum(t.cost_usd for t in self.targets)

    @property
    def warnings(self) -> list[str]:
        return [f"target {t.target!r}: {w}" for t in self.targets for w in t.warnings]


def quota_ramp_s(connections: float, limits: Limits) -> float:
    """Time to open ``connections`` at ``connections_per_minute`` per rolling window, starting at once."""
    if limits.connections_per_minute is None or connections <= 0:
        return 0.0
    return max(0, math.ceil(connections / int(limits.connections_per_minute)) - 1) * limits.window_s


def session_seconds(scenario: Any, prices: Prices) -> tuple[float, float, float]:
    """(session length, seconds the caller's mic streams, seconds of replies) of one session, estimated."""
    from .fixtures import FixtureError, load_manifest

    try:
        manifest = load_manifest(scenario.fixtures_dir)
    except FixtureError:
        manifest = {}
    total, speech = CONNECT_S, 0.0
    for turn in scenario.conversation:
        fx = manifest.get(turn.fixture)
        utter = fx.duration_ms / 1000 if fx is not None else 3.0
        speech += utter
        if turn.barge_in_after_ms is not None:  # speaks over the previous reply: no pause, no wait
            total += utter + prices.first_audio_s + prices.reply_audio_s / 2
        else:
            total += turn.pause_ms / 1000 + utter + prices.first_audio_s + prices.reply_audio_s
    total += scenario.audio.trailing_silence_ms / 1000
    mic = speech if scenario.manual else total - CONNECT_S  # an open mic streams silence too
    return total, mic, prices.reply_audio_s * len(scenario.conversation)


def _user_seconds(plan: Any) -> float:
    """∫ users(t) dt over the run (closed-loop shapes), sampled once per second."""
    step = 1.0 if plan.duration_s <= 6 * 3600 else plan.duration_s / 20000
    t, acc = 0.0, 0.0
    while t < plan.duration_s:
        acc += plan._users_at(t, None) * min(step, plan.duration_s - t)
        t += step
    return acc


def _shape_ramp_s(plan: Any, peak: int) -> float:
    """When the shape first runs ``peak`` users, with users started at most ``spawn_rate`` per second."""
    t, running = 0.0, 0.0
    while t < plan.duration_s:
        running = min(plan._users_at(t, None), running + plan.spawn_rate)
        if running >= peak:
            return t
        t += 1.0
    return plan.duration_s


def plan_scenario(scenario: Any, *, prices: Prices | None = None, users: int | None = None,
                  spawn_rate: float | None = None, duration_s: float | None = None, profile: str | None = None,
                  override_url: str | None = None) -> ScenarioPlan:
    from .arrivals import ArrivalSpec
    from .client.endpoints import EMBEDDED_MODEL, target_limits
    from .shapes import make_plan, peak_users

    prices = prices or load_prices()
    plan = make_plan(scenario.load, users=users, spawn_rate=spawn_rate, duration_s=duration_s, drain_s=0.0)
    sess_s, mic_s, reply_s = session_seconds(scenario, prices)
    lo, hi = scenario.load.think_time_s
    cycle_s = sess_s + (lo + hi) / 2
    peak_all = peak_users(plan)
    if plan.kind == "arrivals":
        spec = ArrivalSpec.from_plan(plan)
        sessions_all = spec.expected_callers
        # Little's law: sessions alive = arrival rate x session length, capped by the lines.
        peak_all = min(spec.max_concurrent, max(1, math.ceil(min(sessions_all, spec.rate_per_s * sess_s))))
        shape_ramp = peak_all / spec.rate_per_s
        busy_s = sessions_all * sess_s
    else:
        shape_ramp = _shape_ramp_s(plan, peak_all)
        busy_s = _user_seconds(plan) * (sess_s / cycle_s)
        sessions_all = busy_s / sess_s
        if scenario.load.sessions_per_user is not None:
            sessions_all = min(sessions_all, peak_all * scenario.load.sessions_per_user)
            busy_s = sessions_all * sess_s
    n = len(scenario.targets) if not override_url else 1
    specs = scenario.targets if not override_url else scenario.targets[:1]
    out = []
    for spec_t in specs:
        limits = target_limits(spec_t, profile, override_url)
        model = (spec_t.target.model if spec_t.target is not None and spec_t.target.model else
                 ("agent" if spec_t.target is not None and spec_t.target.agent else EMBEDDED_MODEL))
        peak = math.ceil(peak_all / n)
        sessions = sessions_all / n
        in_s, out_s = busy_s / n * (mic_s / sess_s), sessions * reply_s
        key, price = prices.for_model(model)
        tokens_in, tokens_out = in_s * INPUT_AUDIO_TOKENS_PER_S, out_s * OUTPUT_AUDIO_TOKENS_PER_S
        cost = (tokens_in * price["audio_input"] + tokens_out * price["audio_output"]) / 1e6
        tpm = peak * 60 * (INPUT_AUDIO_TOKENS_PER_S * mic_s + OUTPUT_AUDIO_TOKENS_PER_S * reply_s) / sess_s
        new_per_min = peak * 60 / cycle_s if plan.kind != "arrivals" else spec.rate_per_s * 60 / n
        to_open = min(peak, sessions or peak)
        cpm = limits.connections_per_minute
        if plan.kind == "arrivals" and cpm is not None and new_per_min > cpm * 60 / limits.window_s:
            to_open = sessions  # arrivals outpace the quota: admitting all of them is the ramp
        tp = TargetPlan(target=spec_t.name, model=model, limits=limits, peak=peak, sessions=sessions,
                        session_s=sess_s, shape_ramp_s=shape_ramp, quota_ramp_s=quota_ramp_s(to_open, limits),
                        new_per_min=new_per_min, tokens_per_min=tpm, audio_in_min=in_s / 60, audio_out_min=out_s / 60,
                        cost_usd=cost, price_key=key)
        if cpm is not None:
            allowed = cpm * 60 / limits.window_s
            if new_per_min > allowed:
                tp.warnings.append(f"needs ~{new_per_min:.0f} new sessions/min to hold {peak} callers but the quota "
                                   f"allows {allowed:g}/min: callers will wait for connection budget and the load "
                                   f"will stay below the peak")
            if tp.quota_ramp_s > tp.shape_ramp_s and tp.quota_ramp_s > 0:
                tp.warnings.append(f"the connection quota ({cpm:g} per {limits.window_s:g} s) stretches the ramp to "
                                   f"{tp.quota_ramp_s:.0f} s (the shape alone: {tp.shape_ramp_s:.0f} s)")
        tpm_cap = limits.tokens_per_minute
        if tpm_cap is not None:
            tpm_allowed = tpm_cap * 60 / limits.window_s
            if tpm > tpm_allowed:
                tp.warnings.append(f"~{tpm:,.0f} tokens/min at the peak exceeds the quota of {tpm_allowed:,.0f}/min: "
                                   f"expect throttled turns (about {int(peak * tpm_allowed / tpm)} callers fit)")
        if limits.max_session_minutes is not None and sess_s > limits.max_session_minutes * 60:
            tp.warnings.append(f"a session (~{sess_s / 60:.0f} min) outlives the {limits.max_session_minutes:g}-minute "
                               f"session cap: callers will reconnect and continue")
        out.append(tp)
    return ScenarioPlan(scenario=scenario.name, file=scenario.file, duration_s=plan.duration_s, targets=out,
                        prices=prices)


def _lim(v: float | None, fmt: str = "{:g}") -> str:
    return "none" if v is None else fmt.format(v)


def format_plan(sp: ScenarioPlan) -> str:
    lines = [f"{sp.file}: {sp.scenario}, {sp.duration_s / 60:g} min, estimated cost ${sp.cost_usd:,.2f}"]
    for t in sp.targets:
        lim = t.limits
        lines.append(
            f"  target {t.target} ({t.model}; quota {_lim(lim.connections_per_minute)} connections and "
            f"{_lim(lim.tokens_per_minute, '{:,.0f}')} tokens per {lim.window_s:g} s, sessions ≤ "
            f"{_lim(lim.max_session_minutes)} min)")
        lines.append(f"    peak {t.peak} concurrent sessions, ~{t.sessions:,.0f} sessions of ~{t.session_s:.0f} s; "
                     f"ramp {t.ramp_s:.1f} s (quota {t.quota_ramp_s:.1f} s, shape {t.shape_ramp_s:.1f} s); "
                     f"{t.new_per_min:.1f} new sessions/min")
        lines.append(f"    ~{t.tokens_per_min:,.0f} audio tokens/min at the peak; audio {t.audio_in_min:,.1f} min in, "
                     f"{t.audio_out_min:,.1f} min out; ~${t.cost_usd:,.2f} at the '{t.price_key}' price")
        lines.extend(f"    warning: {w}" for w in t.warnings)
    return "\n".join(lines)


def plan_dict(sp: ScenarioPlan) -> dict[str, Any]:
    """For run.json: the estimate the run started with."""
    return {"cost_usd": round(sp.cost_usd, 4), "prices": sp.prices.file, "targets": [
        {"target": t.target, "peak": t.peak, "sessions": round(t.sessions, 1), "session_s": round(t.session_s, 1),
         "ramp_s": round(t.ramp_s, 2), "quota_ramp_s": round(t.quota_ramp_s, 2),
         "tokens_per_min": round(t.tokens_per_min), "audio_in_min": round(t.audio_in_min, 2),
         "audio_out_min": round(t.audio_out_min, 2), "cost_usd": round(t.cost_usd, 4), "warnings": t.warnings}
        for t in sp.targets]}
