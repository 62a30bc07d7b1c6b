"""The real cascaded event order (reference §6a): the user's transcript and item wait, the response waits.

A cascaded model (STT -> LLM -> TTS: gpt-4o, gpt-4.1, gpt-5.x, phi..., agents) sends
``input_audio_transcription.completed`` *before* the user's ``conversation.item.created`` (no
transcription deltas with azure-speech), and the response only after both. ``HeldUserItem`` holds
that pair from the commit until the transcript is ready; the response's ``gate`` sends it early (at
the response's own ``response.created`` instant) if the drawn transcription delay is longer, so the
response - and every first-audio instant - is timed exactly as in the realtime order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .actions import Action, Send, Timer
from .transcribe import transcription_events


@dataclass
class HeldUserItem:
    item_id: str
    item_event: dict[str, Any]  # the user's conversation.item.created
    transcribe: bool
    alive: Callable[[], bool]
    deltas: int = 0  # transcription deltas before completed (none with azure-speech)
    text: str | None = None  # None while recognition runs
    due_ns: int = 0  # when the drawn transcription delay ends
    sent: bool = False

    def emit(self) -> list[Action]:
        """Transcript (deltas if any, then ``completed``) and the user's item, once."""
        if self.sent or self.text is None or not self.alive():
            return []
        self.sent = True
        out: list[Action] = []
        if self.transcribe:
            deltas, done = transcription_events(self.text, self.item_id, self.deltas)
            out += [Send(d) for d in deltas] + [Send(done)]
        return out + [Send(self.item_event)]


def response_gate(held: HeldUserItem | None) -> Callable[[int], "list[Action] | None"]:
    """What ``response.created`` must wait for: nothing, the held item (sent now), or None = hold on."""

    def gate(now_ns: int) -> list[Action] | None:
        if held is None or held.sent:
            return []
        if held.text is None:
            return None  # recognition still running: the response waits (release() resumes it)
        return held.emit()

    return gate


def recognised(held: HeldUserItem, flush: Callable[[HeldUserItem, int], list[Action]],
               waiting: Callable[[], bool]) -> Callable[[str, int], list[Action]]:
    """After recognition: the transcript is known; flush it when the drawn delay is over, or now if
    that is past or a response is already being held for it (``waiting``)."""

    def then(text: str, done_ns: int) -> list[Action]:
        held.text = text
        if done_ns >= held.due_ns or waiting():
            return flush(held, done_ns)
        return [Timer(held.due_ns, lambda now: flush(held, now))]

    return then
