"""voiceload: load tests and latency evaluation for real-time voice agents (Azure AI Voice Live).

The small public vocabulary: a :class:`Scenario` (``load_scenario``), one synthetic caller
(``run_session``), and the :class:`TurnRecord` every measurement ends up in. Imports are lazy so
report-only tools don't pull in gevent.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Scenario", "load_scenario", "run_session", "TurnRecord", "SessionRecord"]
__version__ = "0.1.0"

_WHERE = {"Scenario": "scenario", "load_scenario": "scenario", "run_session": "client.session",
          "TurnRecord": "records", "SessionRecord": "records"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
