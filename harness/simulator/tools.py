"""The simulated agent's tool use: intents that call tools, function-call rounds, MCP and agent actions.

When the session offers tools (or runs in agent mode), each user turn is recognised (the fixture
fingerprint, as for transcription) and looked up in ``replies/intents.yaml``. A match whose tools
the session offers becomes a *calling* response instead of speech:

* function tools (model mode): ``response.created`` → per call ``output_item.added`` {function_call},
  ``conversation.item.created``, ``function_call_arguments.delta``*/``.done``, ``output_item.done`` →
  ``response.done``; then it waits for a ``function_call_output`` per call and the caller's
  ``response.create``, which gets the intent's reply. No output within ``tools.output_timeout_s``:
  an ``error`` event (code ``tool_output_timeout``, the simulator's: the service's is unconfirmed)
  and the round is dropped. With ``interim_response`` (trigger ``tool``) a short filler response
  is spoken when the wait passes ``latency_threshold_ms``.
* MCP tools, and agent mode's own actions: the server calls the tool itself (``tools.mcp_call_ms`` /
  ``tools.agent_action_ms``): ``output_item.added`` {mcp_call}, ``mcp_call_arguments.delta``/``.done``,
  ``mcp_call.in_progress`` … ``mcp_call.completed``, ``response.done``, then it answers by itself.

The calling response's events are emitted by tool_calls.py; this module decides and keeps the rounds.

Ground truth: the calling response's record holds the calls, when the first call's arguments were
sent and when an MCP/agent call ended; the answer's record names the calling response
(``answer_to``) and when the caller's ``response.create`` arrived.
"""

from __future__ import annotations

import functools
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..protocol import events as ev
from .actions import NS_PER_MS, Action, Compute, Send, Timer
from .profiles import rng_for
from .tool_calls import CallingResponse
from .truth import TurnTruth

if TYPE_CHECKING:
    from .session import SimSession

INTENTS_FILE = Path(__file__).resolve().parent / "replies" / "intents.yaml"
FILLER_MS = 900.0
DEFAULT_FILLER = "One moment, please."


@dataclass(frozen=True)
class Intent:
    fixture: str
    calls: tuple[tuple[str, dict[str, Any]], ...]  # (tool, argument templates)
    reply: str
    match: str | None = None

    def arguments(self, text: str) -> list[tuple[str, dict[str, Any]]]:
        """Argument values from the utterance's words (named groups of ``match``) and constants."""
        groups: dict[str, str] = {}
        if self.match:
            m = re.search(self.match, text, re.IGNORECASE)
            groups = {k: v for k, v in (m.groupdict() if m else {}).items() if v is not None}
        out = []
        for tool, args in self.calls:
            out.append((tool, {k: (v.format_map(_Keep(groups)) if isinstance(v, str) else v) for k, v in args.items()}))
        return out


class _Keep(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@functools.lru_cache(maxsize=2)
def load_intents(path: Path = INTENTS_FILE) -> dict[str, Intent]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = {}
    for row in doc.get("intents") or []:
        calls = tuple((str(c["tool"]), dict(c.get("args") or {})) for c in row["calls"])
        out[str(row["fixture"])] = Intent(fixture=str(row["fixture"]), calls=calls, reply=str(row["reply"]),
                                          match=row.get("match"))
    return out


def _recognise(transcriber: Any, samples: Any, rate: int) -> tuple[str | None, str]:
    """(clean fixture id, its text) of an utterance: noisy variants count as the clean one (off the loop)."""
    fid, _score = transcriber.recognise(samples, rate)
    if fid is None:
        return None, ""
    fx = _manifest(str(transcriber.directory)).get(fid)
    return ((fx.variant_of or fid), fx.text) if fx is not None else (fid, "")


@functools.lru_cache(maxsize=4)
def _manifest(directory: str) -> dict[str, Any]:
    from ..fixtures import load_manifest

    return load_manifest(directory)


@dataclass
class _Round:
    """An open function-call round: the calls of one response waiting for the caller's outputs."""

    response_id: str
    intent: Intent
    call_ids: list[str]
    answered: set[str] = field(default_factory=set)
    filler_started: bool = False


class SimTools:
    """Per session. ``start`` intercepts response starts; ``on_item`` sees the caller's outputs."""

    def __init__(self, sess: "SimSession") -> None:
        self.sess = sess
        self.round: _Round | None = None
        self.answer: tuple[Intent, str, str] | None = None  # (intent, calling response id, kind) to answer next
        self.intents = load_intents()
        self.watch: tuple[TurnTruth, int] | None = None  # answer truth whose request stamp may be a shared read's

    def seen(self, recv_ns: int) -> None:
        """The next message after the caller's response.create: same read stamp = that stamp is the later one's."""
        truth, stamp = self.watch  # type: ignore[misc]
        self.watch = None
        if recv_ns == stamp:
            truth.answer_request_recv_shared = True

    # -- what the session offers -------------------------------------------------------------------
    def offered(self) -> dict[str, tuple[str, str]]:
        """tool name → (kind, server label); ``"*"`` when an MCP server allows any name."""
        out: dict[str, tuple[str, str]] = {}
        for t in self.sess.config.get("tools") or []:
            if not isinstance(t, dict):
                continue
            if t.get("type") == "function" and isinstance(t.get("name"), str):
                out[t["name"]] = ("function", "")
            elif t.get("type") == "mcp":
                label = str(t.get("server_label") or "mcp")
                for name in t.get("allowed_tools") or ["*"]:
                    out.setdefault(str(name), ("mcp", label))
        return out

    @property
    def agent_mode(self) -> bool:
        return self.sess.s.agent is not None

    def needs_audio(self, config: dict[str, Any]) -> bool:
        return bool(config.get("tools")) or self.agent_mode

    def on_session_update(self, old: dict[str, Any], new: dict[str, Any], now_ns: int) -> list[Action]:
        """Newly configured MCP servers: list their tools (mcp_list_tools.in_progress → completed)."""
        def labels(cfg: dict[str, Any]) -> set[str]:
            return {str(t.get("server_label")) for t in cfg.get("tools") or [] if isinstance(t, dict)
                    and t.get("type") == "mcp"}
        out: list[Action] = []
        for label in sorted(labels(new) - labels(old)):
            item_id = ev.new_id("item")
            ms = self.sess.profile.tools.mcp_list_tools_ms.sample(rng_for(self.sess.s.seed, self.sess.s.session_index,
                                                                         -1, f"mcp_list:{label}"))
            out.append(Send(ev.server_event("mcp_list_tools.in_progress", item_id=item_id)))
            done = ev.server_event("mcp_list_tools.completed", item_id=item_id)
            out.append(Timer(now_ns + int(ms * NS_PER_MS), lambda _now, e=done: [] if self.sess.closed else [Send(e)]))
        return out

    # -- the caller's outputs ----------------------------------------------------------------------------
    def on_item(self, event: dict[str, Any], now_ns: int) -> None:
        item = event.get("item")
        r = self.round
        if r is None or not isinstance(item, dict) or item.get("type") != "function_call_output":
            return
        if item.get("call_id") in r.call_ids:
            r.answered.add(item["call_id"])
        if r.answered >= set(r.call_ids):
            self.round, self.answer = None, (r.intent, r.response_id, "function")

    # -- response starts -----------------------------------------------------------------------------
    def start(self, truth: TurnTruth, now_ns: int, params: dict[str, Any]) -> list[Action] | None:
        """Actions replacing a plain response, or None to let the session start one (maybe with a reply
        chosen here)."""
        if self.answer is not None and truth.trigger in ("response.create", "mcp"):
            intent, rid, kind = self.answer
            self.answer = None
            truth.answer_to = rid
            if kind == "function":
                truth.answer_request_recv_mono_ns = now_ns
                self.watch = (truth, now_ns)
            self.sess.reply_override = self._reply(intent.reply)
            return None
        if truth.trigger not in ("vad", "manual") or truth.speech_start_audio_ms is None \
                or truth.speech_end_audio_ms is None:
            return None
        offered = self.offered()
        if not offered and not self.agent_mode:
            return None
        sess = self.sess
        pad = float((sess.config.get("turn_detection") or {}).get("prefix_padding_ms", 300) or 0)
        samples = sess.input.segment(max(0.0, truth.speech_start_audio_ms - pad), truth.speech_end_audio_ms)
        if len(samples) == 0:
            return None
        rate, turn = sess.input.fmt.sample_rate, sess.turn_index

        def work() -> tuple[str | None, str]:
            return _recognise(sess.s.transcriber, samples, rate)

        def then(result: tuple[str | None, str], _now: int) -> list[Action]:
            if sess.closed or sess.turn_index != turn or sess.response is not None:
                return []
            return self._decide(result[0], result[1], truth, now_ns, params, offered)

        return [Compute(work, then)]

    def _decide(self, fixture_id: str | None, text: str, truth: TurnTruth, now_ns: int, params: dict[str, Any],
                offered: dict[str, tuple[str, str]]) -> list[Action]:
        intent = self.intents.get(fixture_id or "")
        calls = intent.arguments(text) if intent else []
        if self.agent_mode:
            kinds = [("agent", str((self.sess.s.agent or {}).get("name") or "agent"))] * len(calls)
        else:
            kinds = [offered.get(name) or (offered.get("*") if "*" in offered else None) for name, _ in calls]
            if any(k is not None and k[0] == "function" for k in kinds):  # one round: the caller's functions
                kinds = [k if k is not None and k[0] == "function" else None for k in kinds]
            calls = [c for c, k in zip(calls, kinds) if k is not None]
            kinds = [k for k in kinds if k is not None]
        if intent is None or not calls:
            return self.sess._start_response(truth, now_ns, params, tools_checked=True)
        return self._calling(intent, calls, kinds, truth, now_ns)

    def _reply(self, reply_id: str, keep_ms: float | None = None, text: str | None = None) -> tuple[Any, float]:
        from .reply_bank import duration_ms

        bank = self.sess.s.bank
        reply = next((r for r in bank.replies if r.id == reply_id), None) or bank.replies[0]
        if text is not None:
            reply = types.SimpleNamespace(id=f"{reply.id}:filler", text=text, samples=reply.samples,
                                          encoded=reply.encoded)
        return reply, min(duration_ms(reply), keep_ms) if keep_ms else duration_ms(reply)

    # -- the calling response ------------------------------------------------------------------------
    def _calling(self, intent: Intent, calls: list[tuple[str, dict[str, Any]]], kinds: list[tuple[str, str]],
                 truth: TurnTruth, now_ns: int) -> list[Action]:
        sess, p = self.sess, self.sess.profile
        seq = sess.response_seq
        sess.response_seq += 1
        rng = rng_for(sess.s.seed, sess.s.session_index, seq, "response")
        created_ms, first_ms = p.response_created_delay_ms.sample(rng), p.first_audio_delay_ms.sample(rng)
        anchor = truth.speech_end_recv_mono_ns if p.first_audio_anchor == "speech_end" and \
            truth.speech_end_recv_mono_ns is not None else now_ns
        created_at = now_ns + int(created_ms * NS_PER_MS)
        kind = kinds[0][0]
        latency = 0.0
        if kind != "function":
            dist = p.tools.agent_action_ms if kind == "agent" else p.tools.mcp_call_ms
            latency = dist.sample(rng_for(sess.s.seed, sess.s.session_index, seq, "tool_latency"))
        r = CallingResponse(self, intent, calls, kinds, truth, created_at, max(anchor + int(first_ms * NS_PER_MS),
                                                                              created_at), latency)
        truth.injected_delay_ms, truth.created_delay_ms, truth.delay_anchor = first_ms, created_ms, p.first_audio_anchor
        sess.response = r  # type: ignore[assignment]
        sess.s.stats.responses += 1
        return [Timer(created_at, r.on_created)]

    def on_calling_done(self, r: CallingResponse, now_ns: int) -> list[Action]:
        """The calling response ended: open the round (function) or answer by itself (MCP, agent)."""
        sess = self.sess
        if r.truth.status != "completed" or sess.closed:
            return []
        if r.kind != "function":
            self.answer = (r.intent, r.rid, r.kind)
            return sess._start_response(sess._truth("mcp", None, None, None), now_ns, {})
        rnd = self.round = _Round(r.rid, r.intent, [c["call_id"] for c in r.items])
        out: list[Action] = [Timer(now_ns + int(sess.profile.tools.output_timeout_s * 1e9),
                                   lambda now: self._output_timeout(rnd, now))]
        interim = sess.config.get("interim_response")
        if isinstance(interim, dict) and "tool" in (interim.get("triggers") or ["tool"]):
            threshold = float(interim.get("latency_threshold_ms", 2000) or 0)
            out.append(Timer(now_ns + int(threshold * NS_PER_MS), lambda now: self._filler(rnd, interim, now)))
        return out

    def _output_timeout(self, rnd: _Round, now_ns: int) -> list[Action]:
        if self.round is not rnd or self.sess.closed:
            return []
        self.round = None
        missing = [c for c in rnd.call_ids if c not in rnd.answered]
        return self.sess._error(f"No function_call_output was received for call_id {', '.join(missing)} within "
                                f"{self.sess.profile.tools.output_timeout_s:g} s.", "tool_output_timeout", None, None,
                                error_type="server_error")

    def _filler(self, rnd: _Round, interim: dict[str, Any], now_ns: int) -> list[Action]:
        sess = self.sess
        if self.round is not rnd or rnd.filler_started or sess.closed or sess.response is not None:
            return []
        rnd.filler_started = True
        texts = [t for t in interim.get("texts") or [] if isinstance(t, str) and t]
        truth = sess._truth("interim", None, None, None)
        truth.answer_to = rnd.response_id
        sess.reply_override = self._reply(rnd.intent.reply, FILLER_MS, texts[0] if texts else DEFAULT_FILLER)
        return sess._start_response(truth, now_ns, {}, tools_checked=True)
