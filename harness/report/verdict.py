"""A run's verdict: PASS, FAIL or INCOMPLETE, its exit code and the reasons, from one place.

``voiceload run`` / ``check`` (the console's last line), report.html (the banner) and the Locust file
(at each test stop) all call :func:`judge`, so the exit code, the console and the report never
disagree. The rules (README "Exit codes"):

* INCOMPLETE (exit 3) when the run cannot be judged: interrupted or aborted (run.json ``status``),
  records lost, no turn recorded (every session refused, or none ran), no valid turn, or the load
  generator overloaded for more than :data:`MAX_INVALID_SHARE` of the turns. A run judged on no data
  never passes.
* FAIL (exit 1) when a threshold is breached (or has no data) or an expectation failed; expectation
  failures count unless ``allow_expectation_failures`` (``--allow-expectation-failures``).
* PASS (exit 0) otherwise.

This module imports only ``aggregate`` and ``check`` (never ``html``), so the Locust file and the
HTML report can both import it without a cycle.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..exitcodes import EXIT_BREACH, EXIT_INCOMPLETE, EXIT_OK
from ..records import STOP_ABORTED
from .aggregate import load_sessions, load_turns, read_meta, target_order, typed_turns
from .check import CheckResult, _fmt, evaluate, parse_threshold

PASS, FAIL, INCOMPLETE = "PASS", "FAIL", "INCOMPLETE"
#: More invalid turns than this share (generator overloaded) and the run's numbers cannot be trusted.
MAX_INVALID_SHARE = 0.10
_NEGATE = {"<=": ">", "<": ">=", ">=": "<", ">": "<=", "==": "!="}


@dataclass(frozen=True)
class Verdict:
    """What a run proved. ``reasons`` name exactly what failed (empty on PASS)."""

    status: str  # PASS | FAIL | INCOMPLETE
    exit_code: int
    reasons: list[str] = field(default_factory=list)
    thresholds: list[CheckResult] = field(default_factory=list)
    expectations: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (checked, failed)
    notes: list[str] = field(default_factory=list)  # true but not failing, e.g. ignored expectation failures

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def expectations_checked(self) -> int:
        return sum(n for n, _ in self.expectations.values())

    @property
    def expectations_failed(self) -> int:
        return sum(bad for _, bad in self.expectations.values())

    def line(self) -> str:
        """The console's last line: ``VERDICT: FAIL — first_audio_ms.p95 1820 > 1500; 3 expectations failed``."""
        if self.reasons:
            return f"VERDICT: {self.status} — " + "; ".join(self.reasons)
        held = [f"{len(self.thresholds)} threshold{'s' * (len(self.thresholds) != 1)} held"] if self.thresholds else []
        if self.expectations_checked:
            held.append(f"{self.expectations_checked - self.expectations_failed} of {self.expectations_checked} "
                        f"expectations held")
        return f"VERDICT: {self.status}" + (" — " + "; ".join(held + self.notes) if held or self.notes else "")

    def to_dict(self) -> dict[str, Any]:
        """For run.json: the verdict as written when the run ended."""
        return {"status": self.status, "exit_code": self.exit_code, "reasons": list(self.reasons),
                "notes": list(self.notes)}


def judge(run_dir: str | os.PathLike[str], *, thresholds: Sequence[str] | None = None,
          allow_expectation_failures: bool | None = None) -> Verdict:
    """The verdict of a run directory (run.json + turns.jsonl + sessions.jsonl).

    ``thresholds`` default to run.json's; ``allow_expectation_failures`` defaults to what the run
    recorded (run.json ``allow_expectation_failures``), else False. ValueError on a bad threshold.
    """
    return judge_frames(load_turns(run_dir), load_sessions(run_dir), read_meta(run_dir), thresholds=thresholds,
                        allow_expectation_failures=allow_expectation_failures)


def judge_frames(df: pd.DataFrame, sessions: pd.DataFrame | None, meta: Mapping[str, Any], *,
                 thresholds: Sequence[str] | None = None,
                 allow_expectation_failures: bool | None = None) -> Verdict:
    """:func:`judge` on frames already loaded (report.html has them in hand)."""
    df = typed_turns(df)
    if thresholds is None:
        thresholds = [t for t in meta.get("thresholds") or [] if isinstance(t, str)]
    if allow_expectation_failures is None:
        allow_expectation_failures = bool(meta.get("allow_expectation_failures"))
    parsed = [parse_threshold(t) for t in thresholds]
    results = evaluate(df, parsed, targets=target_order(df, meta, include_unseen=True)) if len(df) else []
    counts = expectation_counts(df)
    failed = sum(bad for _, bad in counts.values())
    incomplete = _incomplete(df, sessions, meta)
    reasons: list[str] = []
    notes: list[str] = []
    if incomplete:
        return Verdict(INCOMPLETE, EXIT_INCOMPLETE, incomplete, results, counts)
    reasons += [_breach(r) for r in results if not r.passed]
    if failed:
        text = _expectation_text(counts)
        if allow_expectation_failures:
            notes.append(f"{text} (allowed by --allow-expectation-failures)")
        else:
            reasons.append(text)
    if reasons:
        return Verdict(FAIL, EXIT_BREACH, reasons, results, counts, notes)
    return Verdict(PASS, EXIT_OK, [], results, counts, notes)


def _breach(r: CheckResult) -> str:
    where = f" [{r.target}]" if r.target else ""
    th = r.threshold
    if r.actual is None:
        return f"{th.expr}{where}: no data (limit {th.op} {th.limit:g})"
    return f"{th.expr}{where} {_fmt(r.actual)} {_NEGATE[th.op]} {th.limit:g}"


def expectation_counts(df: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per expectation name, over valid turns: (checked, failed). Also the report's expectations table."""
    out: dict[str, list[int]] = {}
    if not len(df):
        return {}
    # Throttled turns (harness/quota.py) measured the quota, not the agent: their expectations don't count.
    judged = df["valid"].to_numpy(dtype=bool) & (df["throttle"].to_numpy(dtype=object) == "")
    for items in df.loc[judged, "expectations"]:
        for e in items:
            if isinstance(e, dict):
                c = out.setdefault(str(e.get("name", "?")), [0, 0])
                c[0] += 1
                c[1] += not e.get("ok", True)
    return {k: (n, bad) for k, (n, bad) in out.items()}


def _expectation_text(counts: Mapping[str, tuple[int, int]]) -> str:
    failed = sorted(((bad, name) for name, (_, bad) in counts.items() if bad), reverse=True)
    total = sum(bad for bad, _ in failed)
    top = ", ".join(f"{name} ×{bad}" for bad, name in failed[:3])
    more = f", {len(failed) - 3} more kinds" if len(failed) > 3 else ""
    return f"{total} expectation{'s' * (total != 1)} failed ({top}{more})"


def _incomplete(df: pd.DataFrame, sessions: pd.DataFrame | None, meta: Mapping[str, Any]) -> list[str]:
    """Why the run cannot be judged; empty when it can."""
    out = []
    status = meta.get("status")
    if status == "interrupted":
        intr = meta.get("interrupted") if isinstance(meta.get("interrupted"), dict) else {}
        out.append(f"interrupted by {intr.get('signal', 'a signal')}" + (f" at {intr['at']}" if intr.get("at") else ""))
    elif status == "aborted":
        out.append(f"aborted: {meta.get('abort_reason') or 'see run.json notes'}")
    elif status == "running":  # written when load starts, replaced when the run ends
        out.append("the run did not finish (run.json has no end: the process was killed, or is still running)")
    if meta.get("write_error"):
        out.append(f"records lost: {meta['write_error']}")
    n = len(df)
    if not n:
        out.append(_no_turns(sessions))
    else:
        # Turns cut short by the generator's own stop are not measurements, and no sign of overload.
        cut = (df["error"].astype(str).str.contains(STOP_ABORTED, regex=False).to_numpy(dtype=bool)
               if "error" in df else np.zeros(n, dtype=bool))
        invalid = int((~df["valid"].to_numpy(dtype=bool) & ~cut).sum())
        n -= int(cut.sum())
        if not n:
            out.append("no data: every turn was cut short by the load generator's stop")
        elif invalid == n:
            out.append(f"no valid turn: all {n} turns were measured while the load generator was overloaded")
        elif invalid / n > MAX_INVALID_SHARE:
            out.append(f"load generator overloaded: {invalid} of {n} turns invalid (> {MAX_INVALID_SHARE:.0%})")
    return out


def _no_turns(sessions: pd.DataFrame | None) -> str:
    if sessions is None or not len(sessions):
        return "no data: no session ran and no turn was recorded"
    bad = sessions[sessions["outcome"].astype(str) != "ok"]
    if len(bad) == len(sessions):
        statuses = Counter(int(h) for h in bad["http_status"].dropna())
        why = ", ".join(f"HTTP {h} ×{c}" for h, c in statuses.most_common()) or ", ".join(
            f"{o} ×{c}" for o, c in Counter(bad["outcome"].astype(str)).most_common())
        return f"no data: all {len(sessions)} sessions refused or failed ({why})"
    return f"no data: {len(sessions)} sessions recorded no turn"
