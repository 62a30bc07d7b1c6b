"""What the transport's reader greenlet calls for every received message: the receive hot path.

A mixin of CallerSession (harness/client/session.py): ``_on_message`` is handed to the transport as
a bound method, so a received event costs no more calls than before the split.
"""

from __future__ import annotations

import time

from .. import audio
from ..protocol import events as ev
from ..timeline import TurnTimeline

NS = 1_000_000


class Receiver:
    # -- I/O callbacks (reader greenlet) -----------------------------------------------------------------
    def _on_message(self, payload: bytes, t: int, binary: bool) -> None:
        if not payload:
            info = self.transport.closed if self.transport else None
            detail = (info.error or f"close code {info.code}") if info else "closed"
            self.timeline.close(t, detail)
            if not self._updated.ready():
                self._updated.set(None)
            self.changed.set()
            return
        try:
            event = ev.parse(payload)
        except ev.ProtocolError:
            self.malformed += 1
            self.timeline.session_events.append((t, "binary" if binary else "malformed", len(payload)))
            return
        self.timeline.route(event, t, len(payload))
        etype = event["type"]
        if self.recorder is not None and etype == ev.AUDIO_DELTA and isinstance(event.get("delta"), str):
            self.recorder.on_delta(t, str(event.get("response_id")), event["delta"])
        if etype == ev.SESSION_CREATED:
            self._created = event.get("session") if isinstance(event.get("session"), dict) else {}
            self._created_ns = t
            self.changed.set()
        elif etype == ev.SESSION_UPDATED and not self._updated.ready():
            self._updated.set(True)
        elif etype == ev.ERROR and not self._updated.ready():
            err = event.get("error") if isinstance(event.get("error"), dict) else {}
            if err.get("event_id") in (None, self._update_event_id):
                self.record.error = f"session.update rejected: {err.get('code')}: {err.get('message')}"[:500]
                self._updated.set(False)

    def _on_turn_event(self, turn: TurnTimeline, etype: str) -> None:
        if self.tools is not None and turn.tools is not None:
            self.tools.on_event(turn, etype)
        if etype == ev.AUDIO_DELTA and len(turn.deltas) > 1:
            return  # only the first delta of a response wakes anyone up
        if etype == ev.RESPONSE_DONE and turn.status == "cancelled" and turn.output_item_id and turn.deltas:
            self._truncate(turn)
        self.changed.set()

    def _truncate(self, turn: TurnTimeline) -> None:
        """Tell the server how much of the interrupted answer the caller actually heard."""
        td = self.sc.session.get("turn_detection") or {}
        if isinstance(td, dict) and td.get("auto_truncate"):
            return
        heard_ms = (time.monotonic_ns() - turn.deltas[0][0]) / NS
        audio_ms = turn.audio_bytes / (self.out_fmt.bytes_per_second / 1000)
        try:
            self._send(ev.dumps(ev.item_truncate(turn.output_item_id, int(min(heard_ms, audio_ms)))))
        except ConnectionError:
            pass

    def _voiced(self, pcm: bytes) -> int | None:
        i = audio.first_voiced_sample(pcm, self.out_fmt)
        return None if i is None else i * (1 if self.out_fmt.codec in ("ulaw", "alaw") else 2)

