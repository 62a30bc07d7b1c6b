"""Responses of a simulated session: response.create and cancel, the start of a planned reply, the
token quota's verdict on it, and what follows its end (a mixin of SimSession, session.py, whose
state it uses: ``self.response``, ``self.pending``, ``self.deferred``, quota, tools, config)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ..limits import text_tokens
from ..protocol import events as ev
from ..protocol import session as ps
from .actions import Action, Close, Record, Send
from .cascade import response_gate
from .planning import draw_plan
from .quotas import THROTTLED_TOKENS, TOKENS_CLOSE_CODE, failed_response, throttle_record, tokens_error
from .responder import ActiveResponse, ResponseContext
from .truth import TurnTruth

MIN_COMMIT_MS = 100.0


class Responses:
    def _response_create(self, event: dict[str, Any], now_ns: int) -> list[Action]:
        params = event.get("response") or {}
        eid = event.get("event_id")
        if not isinstance(params, dict):
            return self._error("Invalid type for 'response': expected an object.", "invalid_type", "response", eid)
        out: list[Action] = []
        if self.deferred is not None:  # an explicit response.create answers the waiting turn
            self.pending, self.deferred = self.pending or self.deferred, None
        r = self.response
        if r is not None and r.active:
            if params.get("cancel_previous", True) is False:
                return self._error(f"Conversation already has an active response in progress: {r.ctx.response_id}. "
                                   "Wait until the response is finished before creating a new one.",
                                   "conversation_already_has_active_response", None, eid)
            out += r.cancel("client_cancelled", now_ns)
        if not self.vad_mode and params.get("commit", True) is not False:
            out += [a for sev in self.input.flush() for a in self._on_speech(sev, now_ns)]
            if self.input.uncommitted_ms >= MIN_COMMIT_MS:
                out += self._manual_commit(now_ns)
        truth, self.pending = self.pending, None
        if truth is None:
            truth = self._truth("response.create", None, None, None)
        return out + self._start_response(truth, now_ns, params)

    def _start_response(self, truth: TurnTruth, now_ns: int, params: dict[str, Any],
                        tools_checked: bool = False) -> list[Action]:
        if not tools_checked:
            hooked = self.tools.start(truth, now_ns, params)
            if hooked is not None:
                return hooked
        p, s = self.profile, self.s
        retry = self.quota.tokens_retry_after(now_ns)
        if retry is not None:
            return self._tokens_throttled(truth, retry, now_ns, params)
        seq = self.response_seq
        self.response_seq += 1
        plan = draw_plan(p, s.bank, s.seed, s.session_index, seq, now_ns, truth.speech_end_recv_mono_ns, params,
                         self.config, self.cascaded)
        if self.reply_override is not None:  # tools: the answer to a tool call, or an interim filler
            (reply, keep_ms), self.reply_override = self.reply_override, None
            plan = dataclasses.replace(plan, reply=reply, keep_ms=keep_ms)
        rid, item_id = ev.new_id("resp"), ev.new_id("item")
        modalities = params.get("modalities") or self.config["modalities"]
        try:
            out_fmt = ps.output_format_of({"output_audio_format": params.get("output_audio_format")
                                           or self.config["output_audio_format"]})
        except ValueError as exc:
            return self._error(str(exc), "invalid_value", "response.output_audio_format", None)
        truth.response_id, truth.output_item_id = rid, item_id
        truth.delay_anchor = p.first_audio_anchor
        truth.injected_delay_ms, truth.created_delay_ms = plan.first_ms, plan.created_ms
        truth.audio_pace, truth.chunk_ms, truth.reply_id = plan.pace, plan.chunk_ms, plan.reply.id
        ctx = ResponseContext(response_id=rid, item_id=item_id, conversation_id=self.conversation_id,
                              modalities=list(modalities), out_fmt=out_fmt,
                              voice=params.get("voice") or self.config["voice"],
                              input_audio_tokens=getattr(self, "_input_tokens", 0),
                              in_conversation=params.get("conversation", "auto") != "none",
                              previous_item_id=lambda: self.conv.add(item_id, "assistant"),
                              on_item=self.conv.set_audio, on_end=self._on_end, spend=self.quota.spend,
                              rate_limits=None if p.quotas.unlimited else self.quota.rate_limits,
                              gate=response_gate(self.user_item if self.cascaded else None))
        self._input_tokens = 0
        self.response = ActiveResponse(ctx, plan, truth, s.bank)
        s.stats.responses += 1
        return self.response.start(now_ns)

    def _tokens_throttled(self, truth: TurnTruth, retry_s: float, now_ns: int, params: dict[str, Any]) -> list[Action]:
        """Token quota exhausted at the response decision: error, then close 1013 or a failed response."""
        q = self.profile.quotas
        used = self.quota.tokens_used(now_ns)
        self.quota.note(THROTTLED_TOKENS)
        self.s.stats.errors_sent += 1
        err = tokens_error(q, used, retry_s)
        rec = throttle_record(THROTTLED_TOKENS, now_ns, time.time_ns(), session_id=self.id,
                              session_index=self.s.session_index, turn_index=truth.turn_index, item_id=truth.item_id,
                              used=used, limit=q.tokens_per_minute, window_s=q.window_s,
                              retry_after_s=round(retry_s, 3), action=self.profile.on_tokens_exceeded)
        if self.profile.on_tokens_exceeded == "close":
            return [Send(err), Record(rec)] + self.connection_lost() + [Close(TOKENS_CLOSE_CODE, "rate limit exceeded")]
        first = self.user_item.emit() if self.cascaded and self.user_item else []
        st = self.s.stats
        st.responses += 1
        st.by_status["failed"] = st.by_status.get("failed", 0) + 1
        return first + failed_response(err, rec, truth, conversation_id=self.conversation_id,
                                       modalities=list(params.get("modalities") or self.config["modalities"]),
                                       voice=params.get("voice") or self.config["voice"],
                                       output_audio_format=params.get("output_audio_format")
                                       or self.config["output_audio_format"])

    def _on_end(self, r: ActiveResponse, now_ns: int) -> list[Action]:
        if self.response is r:
            self.response = None
        st = self.s.stats
        st.by_status[r.truth.status] = st.by_status.get(r.truth.status, 0) + 1
        if r.truth.fault:
            st.faults[r.truth.fault] = st.faults.get(r.truth.fault, 0) + 1
        if self.deferred is not None and not self.closed and self.response is None:
            truth, self.deferred = self.deferred, None
            return self._start_response(truth, now_ns, {})
        return []

    def _item_create(self, event: dict[str, Any], now_ns: int) -> list[Action]:
        """conversation.item.create; its text counts against the token quota (about 4 chars a token)."""
        out = self.conv.create(event, now_ns)
        item = event.get("item")
        if isinstance(item, dict) and out and isinstance(out[0], Send) and out[0].event.get("type") == ev.ITEM_CREATED:
            text = "".join(str(c.get("text") or "") for c in item.get("content") or [] if isinstance(c, dict))
            self.quota.spend(text_tokens(text), now_ns)
        return out

    def _response_cancel(self, event: dict[str, Any], now_ns: int) -> list[Action]:
        r = self.response
        want = event.get("response_id")
        if r is None or not r.active or (want and want != r.ctx.response_id):
            return self._error("Cancellation failed: no active response found", "response_cancel_not_active", None,
                               event.get("event_id"))
        return r.cancel("client_cancelled", now_ns)

