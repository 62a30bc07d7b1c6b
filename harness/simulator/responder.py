"""Response generation and pacing: real speech from the reply bank (reply_bank.py), streamed like the
service does.

A response is planned once (reply, trim, chunking, per-chunk send instants, fault point) from seeded
draws, then driven by timers: headers at ``response.created``, audio deltas interleaved with
transcript deltas at ``audio_pace`` x real time, and the ``.done`` cascade. Cancellation and
faults end it from any state with the same cascade, so the client always sees a well-formed
sequence unless the fault is the point (stall, disconnect).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import audio
from ..limits import OUTPUT_AUDIO_TOKENS_PER_S, text_tokens
from ..protocol import events as ev
from .actions import NS_PER_MS, Action, Close, Record, Send, SendRaw, Timer
from .reply_bank import ReplyBank, duration_ms
from .truth import TurnTruth

VISEME_IDS = 22  # Azure viseme ids 0-21
MALFORMED_TEXT = "{voiceload-simulator: deliberately malformed frame"
MALFORMED_BINARY = b"\x00\xffvoiceload-simulator\xfe"


def spread_words(text: str, n: int, keep_fraction: float = 1.0) -> tuple[list[str | None], str]:
    """Split the words of ``text`` (the first ``keep_fraction`` of them) over ``n`` deltas, evenly."""
    words = text.split()
    words = words[: max(1 if words else 0, int(round(len(words) * min(1.0, keep_fraction))))]
    deltas: list[str | None] = []
    emitted = 0
    for k in range(n):
        upto = int(round(len(words) * (k + 1) / n)) if n else len(words)
        if upto > emitted:
            piece = " ".join(words[emitted:upto])
            deltas.append(piece if emitted == 0 else " " + piece)
            emitted = upto
        else:
            deltas.append(None)
    return deltas, " ".join(words)


@dataclass
class ResponsePlan:
    """Everything drawn up front for one response (all seeded)."""

    created_at_ns: int
    first_at_ns: int
    pace: float
    chunk_ms: int
    jitter_ms: Callable[[], float]
    reply: Any
    keep_ms: float
    fault: str | None = None
    fault_fraction: float = 0.5
    disconnect_abort: bool = True
    malformed_kind: str = "both"
    rate_limits_event: bool = False
    warning_event: bool = False
    cascaded: bool = False  # cascaded order: the whole transcript streams before the first audio delta
    timestamps: bool = False  # response.audio_timestamp.delta per word
    visemes: bool = False  # response.animation_viseme.delta per audio delta
    first_ms: float = 0.0  # the drawn first_audio_delay_ms (truth log)
    created_ms: float = 0.0  # the drawn response_created_delay_ms


@dataclass
class ResponseContext:
    """What a response needs from its session (ids, conversation bookkeeping)."""

    response_id: str
    item_id: str
    conversation_id: str
    modalities: list[str]
    out_fmt: audio.AudioFormat
    voice: Any
    input_audio_tokens: int
    in_conversation: bool
    previous_item_id: Callable[[], str | None]
    on_item: Callable[[str, float], None]  # (item_id, audio ms so far): conversation bookkeeping
    on_end: Callable[["ActiveResponse", int], list[Action]]  # may start a deferred response
    spend: Callable[[int, int], None] = lambda tokens, now_ns: None  # (tokens, now): the resource's token meter
    rate_limits: Callable[[int], list[dict[str, Any]]] | None = None  # payload of rate_limits.updated
    # Cascaded order: what must precede response.created (the user's transcript and item), or None to
    # hold the response until it can be sent (then release() resumes it).
    gate: Callable[[int], "list[Action] | None"] = lambda now_ns: []


@dataclass
class ActiveResponse:
    """One response from ``response.created`` to ``response.done``: a small state machine."""

    ctx: ResponseContext
    plan: ResponsePlan
    truth: TurnTruth
    bank: ReplyBank
    state: str = "pending"  # pending -> streaming -> done (or stalled)
    sent: int = 0
    audio_sent_ms: float = 0.0
    text_sent: list[str] = field(default_factory=list)
    charged: int = 0  # output tokens already spent on the resource's meter
    blocked: bool = False  # response.created was due while the cascaded gate was closed

    def __post_init__(self) -> None:
        p, c = self.plan, self.ctx
        self.audio = "audio" in c.modalities
        if self.audio:
            chunks, durs = self.bank.audio_chunks(p.reply, c.out_fmt, p.chunk_ms)
            n = max(1, math.ceil(p.keep_ms / p.chunk_ms - 1e-9))
            self.chunks, self.durs = chunks[:n], durs[:n]
            self.deltas, self.transcript = spread_words(p.reply.text, len(self.chunks), p.keep_ms / duration_ms(p.reply))
        else:
            words = p.reply.text.split()
            n = max(1, math.ceil(len(words) / 3))
            self.chunks, self.durs = (), tuple(float(p.chunk_ms) for _ in range(n))
            self.deltas, self.transcript = spread_words(p.reply.text, n)
        due, t = [], 0.0
        for i, d in enumerate(self.durs):
            at = p.first_at_ns + int((t / p.pace + (p.jitter_ms() if i else 0.0)) * NS_PER_MS)
            due.append(max(at, due[-1] if due else p.first_at_ns))
            t += d
        self.due = due
        n = len(self.durs)
        self.fault_at = min(n - 1, max(1, int(n * p.fault_fraction))) if p.fault and n > 1 else (0 if p.fault else -1)

    # --- event helpers -----------------------------------------------------------------------------
    def _ids(self) -> dict[str, Any]:
        return {"response_id": self.ctx.response_id, "item_id": self.ctx.item_id, "output_index": 0, "content_index": 0}

    def _part(self) -> dict[str, Any]:
        text = "".join(self.text_sent)
        return {"type": "audio", "transcript": text} if self.audio else {"type": "text", "text": text}

    def _item(self, status: str, content: bool = True) -> dict[str, Any]:
        return ev.message_item(self.ctx.item_id, "assistant", [self._part()] if content else [], status=status)

    def _response(self, status: str, details: dict[str, Any] | None, output: list[dict[str, Any]]) -> dict[str, Any]:
        c = self.ctx
        text = "".join(self.text_sent)
        usage = ev.usage(input_audio_tokens=c.input_audio_tokens if status != "in_progress" else 0,
                         output_audio_tokens=self._audio_tokens(), output_text_tokens=text_tokens(text))
        return ev.response_object(c.response_id, status=status, status_details=details, output=output,
                                  usage_=usage, conversation_id=c.conversation_id, modalities=list(c.modalities),
                                  voice=c.voice, output_audio_format=c.out_fmt.name)

    def _audio_tokens(self) -> int:
        return round(self.audio_sent_ms / 1000.0 * OUTPUT_AUDIO_TOKENS_PER_S)

    def _charge(self, now_ns: int) -> None:
        """Spend the output tokens produced since the last call (same count as ``usage``)."""
        total = self._audio_tokens() + text_tokens("".join(self.text_sent))
        if total > self.charged:
            self.ctx.spend(total - self.charged, now_ns)
            self.charged = total

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self, now_ns: int) -> list[Action]:
        """Timer for the headers (``response.created`` after the drawn delay)."""
        return [Timer(self.plan.created_at_ns, self.on_created)]

    def on_created(self, now_ns: int) -> list[Action]:
        if self.state != "pending":
            return []
        first = self.ctx.gate(now_ns)
        if first is None:  # cascaded: the user's transcript and item go first; release() resumes
            self.blocked = True
            return []
        self.state = "streaming"
        out: list[Action] = self._headers()
        extra: list[Action] = []
        if self.plan.rate_limits_event:  # documented right after response.created; not in the SDK enum
            limits = self.ctx.rate_limits(now_ns) if self.ctx.rate_limits else []
            extra.append(Send(ev.server_event(ev.RATE_LIMITS_UPDATED, rate_limits=limits or [
                {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60.0},
                {"name": "tokens", "limit": 100000, "remaining": 99000, "reset_seconds": 60.0}])))
        if self.plan.warning_event:
            extra.append(Send(ev.server_event(ev.WARNING, warning={
                "code": "simulated_warning", "message": "voiceload simulator: a warning for client robustness tests",
                "param": None})))
        out[1:1] = extra
        out.append(Timer(self.due[0], self.on_chunk))
        return first + out

    def release(self, now_ns: int) -> list[Action]:
        """The cascaded gate opened: send the headers now if they were held back."""
        if self.blocked and self.state == "pending":
            self.blocked = False
            return self.on_created(now_ns)
        return []

    def _headers(self) -> list[Action]:
        c = self.ctx
        out: list[Action] = [Send(ev.server_event(ev.RESPONSE_CREATED, response=self._response("in_progress", None, [])),
                                  self.truth, "response_created")]
        out.append(Send(ev.server_event(ev.OUTPUT_ITEM_ADDED, response_id=c.response_id, output_index=0,
                                        item=self._item("in_progress", content=False))))
        if c.in_conversation:
            out.append(Send(ev.server_event(ev.ITEM_CREATED, previous_item_id=c.previous_item_id(),
                                            item=self._item("in_progress", content=False))))
            c.on_item(c.item_id, 0.0)
        out.append(Send(ev.server_event(ev.CONTENT_PART_ADDED, **self._ids(), part=self._part())))
        return out

    def on_chunk(self, now_ns: int) -> list[Action]:
        if self.state != "streaming":
            return []
        out: list[Action] = []
        n = len(self.durs)
        lead = self.plan.cascaded and self.audio
        while self.sent < n and self.due[self.sent] <= now_ns:
            if self.sent == self.fault_at:
                self._charge(now_ns)
                return out + self._fault(now_ns)
            i = self.sent
            if lead and i == 0:  # cascaded: the LLM's text is out before TTS audio starts (reference §6a)
                out += self._transcript_deltas(range(n))
            if self.audio:
                out.append(Send(ev.server_event(ev.AUDIO_DELTA, **self._ids(), delta=self.chunks[i]), self.truth, "audio"))
                offset = self.audio_sent_ms
                self.audio_sent_ms += self.durs[i]
                self.ctx.on_item(self.ctx.item_id, self.audio_sent_ms)
                out += self._side_events(i, offset)
            if not lead:
                out += self._transcript_deltas((i,))
            self.sent += 1
        self._charge(now_ns)
        if self.sent >= n:
            return out + self.finish("completed", None, now_ns)
        out.append(Timer(self.due[self.sent], self.on_chunk))
        return out

    def _transcript_deltas(self, indices: Any) -> list[Action]:
        out: list[Action] = []
        etype = ev.AUDIO_TRANSCRIPT_DELTA if self.audio else ev.TEXT_DELTA
        for i in indices:
            delta = self.deltas[i]
            if delta is None:
                continue
            self.text_sent.append(delta)
            out.append(Send(ev.server_event(etype, **self._ids(), delta=delta),
                            None if self.audio else self.truth, None if self.audio else "audio"))
        return out

    def _side_events(self, i: int, offset_ms: float) -> list[Action]:
        """Word timestamps and visemes for audio delta ``i`` (which starts ``offset_ms`` into the reply)."""
        out: list[Action] = []
        dur = self.durs[i]
        if self.plan.timestamps and self.deltas[i]:
            words = self.deltas[i].split()
            step = dur / len(words)
            for k, word in enumerate(words):
                out.append(Send(ev.server_event(ev.AUDIO_TIMESTAMP_DELTA, **self._ids(),
                                                audio_offset_ms=int(offset_ms + k * step),
                                                audio_duration_ms=max(1, int(step)), text=word,
                                                timestamp_type="word")))
        if self.plan.visemes:
            out.append(Send(ev.server_event(ev.VISEME_DELTA, **self._ids(), audio_offset_ms=int(offset_ms),
                                            viseme_id=(i * 7 + 3) % VISEME_IDS)))
        return out

    def _fault(self, now_ns: int) -> list[Action]:
        fault = self.plan.fault
        self.truth.fault = fault
        self.plan = _replace_fault(self.plan)  # one shot; malformed continues normally
        self.fault_at = -1
        if fault == "malformed_frame":
            kind = self.plan.malformed_kind
            out: list[Action] = []
            if kind in ("text", "both"):
                out.append(SendRaw(MALFORMED_TEXT))
            if kind in ("binary", "both"):
                out.append(SendRaw(MALFORMED_BINARY))
            return out + self.on_chunk(now_ns)
        if fault == "stall_response":
            self.state = "stalled"
            self.truth.status = "stalled"
            return []
        if fault == "disconnect_mid_response":
            self.state = "done"
            self.truth.status = "disconnected"
            self.ctx.on_end(self, now_ns)  # the connection is closing: nothing new starts
            abort = self.plan.disconnect_abort
            return [Record(self.truth), Close(1011, "simulated server failure", abort=abort)]
        # error_mid_turn
        err = {"type": "server_error", "code": "server_error",
               "message": "The server had an error while processing your request. Sorry about that!"}
        out = [Send(ev.error_event(err["message"], code=err["code"], error_type="server_error"))]
        return out + self.finish("failed", {"type": "failed", "error": err}, now_ns)

    def cancel(self, reason: str, now_ns: int) -> list[Action]:
        """Barge-in (``turn_detected``) or ``response.cancel`` (``client_cancelled``)."""
        if self.state == "done":
            return []
        out: list[Action] = []
        if self.state == "pending":  # cancelled before it was announced: announce it, then end it
            self.state = "streaming"
            out += self._headers()
        return out + self.finish("cancelled", {"type": "cancelled", "reason": reason}, now_ns)

    def finish(self, status: str, details: dict[str, Any] | None, now_ns: int) -> list[Action]:
        self.state = "done"
        c = self.ctx
        item_status = "completed" if status == "completed" else "incomplete"
        out: list[Action] = []
        self._charge(now_ns)
        if self.audio and self.plan.timestamps:
            out.append(Send(ev.server_event(ev.AUDIO_TIMESTAMP_DONE, **self._ids())))
        if self.audio and self.plan.visemes:
            out.append(Send(ev.server_event(ev.VISEME_DONE, **self._ids())))
        if self.audio:
            out.append(Send(ev.server_event(ev.AUDIO_DONE, **self._ids())))
            out.append(Send(ev.server_event(ev.AUDIO_TRANSCRIPT_DONE, **self._ids(), transcript="".join(self.text_sent))))
        else:
            out.append(Send(ev.server_event(ev.TEXT_DONE, **self._ids(), text="".join(self.text_sent))))
        out.append(Send(ev.server_event(ev.CONTENT_PART_DONE, **self._ids(), part=self._part())))
        item = self._item(item_status)
        out.append(Send(ev.server_event(ev.OUTPUT_ITEM_DONE, response_id=c.response_id, output_index=0, item=item)))
        out.append(Send(ev.server_event(ev.RESPONSE_DONE, response=self._response(status, details, [item])),
                        self.truth, "done_sent"))
        self.truth.status = status
        self.truth.reason = (details or {}).get("reason")
        self.truth.audio_sent_ms = self.audio_sent_ms
        out.append(Record(self.truth))
        return out + c.on_end(self, now_ns)

    def abandon(self) -> list[Action]:
        """The connection is gone: record what happened (stalled/in_progress becomes the status)."""
        if self.state == "done":
            return []
        if self.state != "stalled":
            self.truth.status = "disconnected"
        self.state = "done"
        self.truth.audio_sent_ms = self.audio_sent_ms
        return [Record(self.truth)]

    @property
    def active(self) -> bool:
        return self.state in ("pending", "streaming", "stalled")


def _replace_fault(plan: ResponsePlan) -> ResponsePlan:
    import dataclasses

    return dataclasses.replace(plan, fault=None)
