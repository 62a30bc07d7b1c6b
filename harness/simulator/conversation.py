"""The conversation's items as the simulator tracks them, and the client events that touch them.

Only what the protocol needs is kept per item: its role and, for assistant audio, how many ms of it
exist (so ``conversation.item.truncate`` past the end is an error, as on the service).
"""

from __future__ import annotations

from typing import Any, Callable

from ..protocol import events as ev
from .actions import Action, Send

ErrorFn = Callable[[str, str | None, str | None, str | None], list[Action]]


class Conversation:
    def __init__(self, error: ErrorFn) -> None:
        self._error = error
        self.items: dict[str, tuple[str, float]] = {}  # id -> (role, audio ms)
        self.last_item_id: str | None = None

    def add(self, item_id: str, role: str, audio_ms: float = 0.0) -> str | None:
        """Append (or update) an item; returns the previous item id for ``previous_item_id``."""
        prev = self.last_item_id
        if item_id not in self.items:
            self.last_item_id = item_id
        self.items[item_id] = (role, audio_ms)
        return prev

    def set_audio(self, item_id: str, audio_ms: float) -> None:
        self.items[item_id] = ("assistant", audio_ms)

    def _unknown(self, item_id: Any, event_id: str | None) -> list[Action]:
        return self._error(f"Invalid 'item_id': no item with id '{item_id}' found.", "invalid_value", "item_id",
                           event_id)

    def create(self, event: dict[str, Any], now_ns: int) -> list[Action]:
        item, eid = event.get("item"), event.get("event_id")
        if not isinstance(item, dict) or item.get("type") not in ("message", "function_call", "function_call_output",
                                                                    "mcp_approval_response"):
            return self._error("Invalid 'item': expected an object with a supported 'type'.", "invalid_value",
                               "item.type", eid)
        item = dict(item)
        item.setdefault("id", ev.new_id("item"))
        if item["id"] in self.items:
            return self._error(f"Item with id '{item['id']}' already exists.", "invalid_value", "item.id", eid)
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        prev = self.add(item["id"], item.get("role") or item["type"])
        return [Send(ev.server_event(ev.ITEM_CREATED, previous_item_id=prev, item=item))]

    def truncate(self, event: dict[str, Any], now_ns: int) -> list[Action]:
        item_id, eid = event.get("item_id"), event.get("event_id")
        end = event.get("audio_end_ms")
        known = self.items.get(item_id) if isinstance(item_id, str) else None
        if known is None:
            return self._unknown(item_id, eid)
        if known[0] != "assistant":
            return self._error("Only assistant messages can be truncated.", "invalid_value", "item_id", eid)
        if event.get("content_index", 0) != 0:
            return self._error("Invalid 'content_index': the item has one content part.", "invalid_value",
                               "content_index", eid)
        if isinstance(end, bool) or not isinstance(end, int) or end < 0:
            return self._error("Invalid 'audio_end_ms': expected a non-negative integer.", "invalid_value",
                               "audio_end_ms", eid)
        if end > known[1] + 0.5:
            return self._error(f"Audio content of {known[1]:.0f}ms is already shorter than {end}ms.",
                               "invalid_value", "audio_end_ms", eid)
        self.items[item_id] = ("assistant", float(end))
        return [Send(ev.server_event(ev.ITEM_TRUNCATED, item_id=item_id, content_index=0, audio_end_ms=end))]

    def delete(self, event: dict[str, Any], now_ns: int) -> list[Action]:
        item_id = event.get("item_id")
        if item_id not in self.items:
            return self._unknown(item_id, event.get("event_id"))
        del self.items[item_id]
        return [Send(ev.server_event(ev.ITEM_DELETED, item_id=item_id))]

    def retrieve(self, event: dict[str, Any], now_ns: int) -> list[Action]:
        item_id = event.get("item_id")
        known = self.items.get(item_id)
        if known is None:
            return self._unknown(item_id, event.get("event_id"))
        part = {"type": "input_audio", "transcript": None} if known[0] == "user" else {"type": "audio", "transcript": None}
        return [Send(ev.server_event(ev.ITEM_RETRIEVED, item=ev.message_item(item_id, known[0], [part])))]
