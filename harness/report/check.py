"""Threshold gates for CI: ``"[target:]<metric>[.<stat>] <op> <number>"`` → PASS/FAIL, JUnit, exit code.

Values come from :func:`aggregate.group_stats`, the same function that fills summary.csv, so a gate
can never disagree with the report. A threshold without a target selector is checked per target.
"""

from __future__ import annotations

import math
import operator
import os
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from .aggregate import METRICS, SCALARS, STATS, group_stats, load_turns, read_meta, target_order, typed_turns

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq,
}
EXIT_PASS, EXIT_BREACH, EXIT_USAGE = 0, 1, 2
_OP_RE = re.compile(r"(<=|>=|==|<|>)")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TARGET_RE = re.compile(r"^[\w.\-]+$")


@dataclass(frozen=True, slots=True)
class Threshold:
    """One parsed gate; ``str()`` gives its canonical text."""

    metric: str  # a METRICS column, or a scalar such as completeness / count / reason_timeout
    stat: str | None  # one of STATS for a metric; None for a scalar
    op: str
    limit: float
    target: str | None = None

    @property
    def expr(self) -> str:
        return f"{self.metric}.{self.stat}" if self.stat else self.metric

    @property
    def key(self) -> str:
        """The group_stats / summary.csv column holding the value."""
        return f"{self.metric}_{self.stat}" if self.stat else self.metric

    def __str__(self) -> str:
        sel = f"{self.target}:" if self.target else ""
        return f"{sel}{self.expr} {self.op} {self.limit:g}"


@dataclass(frozen=True, slots=True)
class CheckResult:
    threshold: Threshold
    target: str  # "" when the run has no target names
    actual: float | None  # None when there was no data
    passed: bool
    detail: str

    @property
    def name(self) -> str:
        return f"{self.threshold.expr} {self.threshold.op} {self.threshold.limit:g}" + (
            f" [{self.target}]" if self.target else "")


def parse_threshold(text: str) -> Threshold:
    """Parse ``"[target:]metric[.stat] op number"``; ValueError names the part that is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"threshold {text!r}: empty; expected e.g. 'first_audio_ms.p95 <= 1200'")
    parts = _OP_RE.split(text.strip(), maxsplit=1)
    if len(parts) != 3:
        raise ValueError(f"threshold {text!r}: no comparison operator (use one of {', '.join(OPS)})")
    left, op, right = (p.strip() for p in parts)
    if _OP_RE.search(right):
        raise ValueError(f"threshold {text!r}: more than one comparison operator")
    try:
        limit = float(right)
    except ValueError:
        raise ValueError(f"threshold {text!r}: limit {right!r} is not a number") from None
    if math.isnan(limit):
        raise ValueError(f"threshold {text!r}: limit {right!r} is not a number")
    target = None
    if ":" in left:
        target, left = (p.strip() for p in left.split(":", 1))
        if not _TARGET_RE.match(target):
            raise ValueError(f"threshold {text!r}: target selector {target!r} is not a target name")
    if not left:
        raise ValueError(f"threshold {text!r}: no metric before {op!r}")
    metric, _, stat = left.partition(".")
    if not _NAME_RE.match(metric):
        raise ValueError(f"threshold {text!r}: metric {metric!r} is not a name")
    if metric in METRICS:
        if not stat:
            raise ValueError(f"threshold {text!r}: metric {metric!r} needs a stat, e.g. {metric}.p95 "
                             f"(one of {', '.join(STATS)})")
        if stat not in STATS:
            raise ValueError(f"threshold {text!r}: unknown stat {stat!r} (one of {', '.join(STATS)})")
    elif metric in SCALARS:
        if stat:
            raise ValueError(f"threshold {text!r}: {metric!r} is a single number and takes no stat ({stat!r})")
        stat = ""
    else:
        raise ValueError(f"threshold {text!r}: unknown metric {metric!r} (one of "
                         f"{', '.join(METRICS)}; or {', '.join(SCALARS)})")
    return Threshold(metric=metric, stat=stat or None, op=op, limit=limit, target=target)


def evaluate(df: pd.DataFrame, thresholds: Iterable[Threshold | str], *,
             include_invalid: bool = False, targets: Sequence[str] | None = None) -> list[CheckResult]:
    """One result per (threshold, target). A metric with no valid value fails with detail "no data"."""
    df = typed_turns(df)
    names = list(targets) if targets is not None else target_order(df)
    cache: dict[str, dict[str, float]] = {}

    def stats_for(target: str) -> dict[str, float]:
        if target not in cache:
            sub = df if target == "" else df[df["target"].astype(str).to_numpy() == target]
            cache[target] = group_stats(sub, include_invalid=include_invalid)
        return cache[target]

    results = []
    for th in thresholds:
        th = parse_threshold(th) if isinstance(th, str) else th
        for target in [th.target] if th.target else (names or [""]):
            actual = stats_for(target).get(th.key, math.nan)
            if actual is None or math.isnan(actual):
                results.append(CheckResult(th, target, None, False, "no data"))
                continue
            passed = OPS[th.op](actual, th.limit)
            verb = "within" if passed else "breaches"
            detail = f"{th.expr} = {_fmt(actual)} {verb} limit {th.op} {th.limit:g}"
            results.append(CheckResult(th, target, float(actual), passed, detail))
    return results


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.4g}" if abs(x) < 10 else f"{x:.1f}"


def format_table(results: Sequence[CheckResult]) -> str:
    """Aligned plain-text PASS/FAIL table with a one-line verdict."""
    if not results:
        return "no thresholds"
    rows = [("RESULT", "TARGET", "THRESHOLD", "ACTUAL", "DETAIL")] + [
        ("PASS" if r.passed else "FAIL", r.target or "(all)",
         f"{r.threshold.expr} {r.threshold.op} {r.threshold.limit:g}", _fmt(r.actual), r.detail)
        for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    failed = sum(not r.passed for r in results)
    lines.append(f"thresholds: {failed} of {len(results)} breached" if failed
                 else f"thresholds: all {len(results)} within limits")
    return "\n".join(line.rstrip() for line in lines)


def write_junit(results: Sequence[CheckResult], path: str | os.PathLike[str]) -> Path:
    """JUnit XML: suite ``voiceload.thresholds``, one testcase per threshold and target."""
    failures = sum(not r.passed for r in results)
    suites = ET.Element("testsuites", name="voiceload", tests=str(len(results)), failures=str(failures))
    suite = ET.SubElement(suites, "testsuite", name="voiceload.thresholds", tests=str(len(results)),
                          failures=str(failures), errors="0", skipped="0")
    for r in results:
        case = ET.SubElement(suite, "testcase", name=r.name,
                             classname="voiceload.thresholds" + (f".{r.target}" if r.target else ""))
        if not r.passed:
            where = f" on {r.target}" if r.target else ""
            if r.actual is None:
                msg = f"{r.threshold.expr}{where}: no data (limit {r.threshold.op} {r.threshold.limit:g})"
            else:
                msg = (f"{r.threshold.expr}{where} = {_fmt(r.actual)}, limit {r.threshold.op} "
                       f"{r.threshold.limit:g}")
            fail = ET.SubElement(case, "failure", message=msg, type="threshold")
            fail.text = r.detail
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
    return path


def run_check(run_dir: str | os.PathLike[str], thresholds: Sequence[str] | None = None,
              junit: str | os.PathLike[str] | None = None, *, out: Any = None) -> int:
    """Evaluate thresholds (default: run.json's) on a run; print the table; 0 pass, 1 breach, 2 bad input."""
    out = out or sys.stdout
    meta = read_meta(run_dir)
    texts = list(thresholds) if thresholds is not None else list(meta.get("thresholds") or [])
    try:
        parsed = [parse_threshold(t) for t in texts]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    df = load_turns(run_dir)
    results = evaluate(df, parsed, targets=target_order(df, meta, include_unseen=True))
    print(format_table(results), file=out)
    if junit:
        write_junit(results, junit)
    return EXIT_BREACH if any(not r.passed for r in results) else EXIT_PASS
