"""Reports from turn records: tables, a self-contained report.html, comparisons and CI gates.

``aggregate`` (DataFrames, the one set of statistics) → ``plots`` (inline SVG) → ``html`` (report.html,
``write_all``); ``compare`` (bootstrap CIs, verdicts); ``check`` (thresholds, JUnit); ``verdict``
(PASS/FAIL/INCOMPLETE and the exit code).
Submodules are imported lazily so ``import harness.report`` does not pull in matplotlib.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "load_turns": "aggregate", "load_sessions": "aggregate", "summarize": "aggregate",
    "summary_by_turn": "aggregate", "write_tables": "aggregate", "METRICS": "aggregate",
    "write_report": "html", "write_all": "html",
    "compare": "compare", "compare_runs": "compare", "compare_targets": "compare",
    "parse_threshold": "check", "evaluate": "check", "run_check": "check",
    "judge": "verdict", "Verdict": "verdict",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
