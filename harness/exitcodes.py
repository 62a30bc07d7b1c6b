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
