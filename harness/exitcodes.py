"""The exit-code contract shared by ``voiceload`` and the Locust file (README "Exit codes").

A load-testing tool is trusted for its verdict, so every entry point maps outcomes to the same four
codes; a CI gate can rely on them without parsing output.
"""

from __future__ import annotations

EXIT_OK = 0          # the run passed: complete, thresholds and expectations held
EXIT_BREACH = 1      # thresholds or expectations breached (compare: a significant regression, when asked)
EXIT_USAGE = 2       # usage or input error: bad flags, bad scenario, missing run directory
EXIT_INCOMPLETE = 3  # the run is incomplete: interrupted, aborted (abort_on), refused, generator overloaded

MEANING = {
    EXIT_OK: "pass",
    EXIT_BREACH: "thresholds or expectations breached",
    EXIT_USAGE: "usage or input error",
    EXIT_INCOMPLETE: "run incomplete (interrupted, aborted or overloaded)",
}

#: Which code a process that ran several tests (the Locust web UI) exits with: the worst one. Records
#: lost or a bad input outranks a run that could not be judged, which outranks a breach.
_SEVERITY = {EXIT_OK: 0, EXIT_BREACH: 1, EXIT_INCOMPLETE: 2, EXIT_USAGE: 3}


def worst(*codes: int | None) -> int | None:
    """The most severe of ``codes`` (None where no test finished): one failed test is never hidden by a later pass."""
    known = [c for c in codes if c is not None]
    return max(known, key=lambda c: _SEVERITY.get(c, 3)) if known else None
