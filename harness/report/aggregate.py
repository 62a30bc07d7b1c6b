"""Turn records → typed DataFrames → per-group statistics: the one aggregation everything uses.

``summarize`` (summary.csv, report.html), ``check.evaluate`` (CI gates) and ``compare`` all take
their numbers from :func:`group_stats`, so a threshold, a table cell and a comparison never disagree.
Percentiles are numpy's default (``method="linear"``, i.e. Hyndman & Fan type 7) over *valid* turns.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..records import COLUMNS, REASONS, SESSION_OUTCOMES, SessionRecord, TurnRecord, ended_as_expected, read_records

#: Latency / quality metric columns (all float64, NaN when the event never arrived).
METRICS: tuple[str, ...] = (
    "first_audio_ms", "first_voiced_ms", "leading_silence_ms", "vad_ms", "server_response_ms",
    "first_transcript_ms", "response_created_ms", "response_audio_ms", "response_wall_ms", "audio_rtf",
    "underrun_ms", "playback_underruns", "cancel_ms", "wer",
    "first_tool_call_ms", "tool_exec_ms", "answer_first_audio_ms", "filler_audio_ms",
)
#: Metrics where a higher value is better (everything else: lower is better).
HIGHER_IS_BETTER: frozenset[str] = frozenset({"audio_rtf", "completeness", "expectations_pass_rate",
                                              "tool_precision", "tool_recall"})
#: Percentile stats and their level; numpy's default linear interpolation.
PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}
#: Every per-metric stat, in summary.csv column order.
STATS: tuple[str, ...] = ("count", "min", "p50", "p90", "p95", "p99", "max", "mean")
#: Scalar (per-group, not per-metric) columns of the summary, in order.
SCALARS: tuple[str, ...] = (
    "count", "valid", "invalid", "complete", "failures", "completeness",
    "expectations_checked", "expectations_failed", "expectations_pass_rate",
    "tool_call_count", "tool_precision", "tool_recall", "interrupted_as_expected",
) + tuple(f"reason_{r}" for r in REASONS) + (
    # Turns the service throttled or cut at the session cap (harness/quota.py): counted here, and kept
    # out of completeness/failures, because they measure the quota, not the agent.
    "throttled", "throttled_connections", "throttled_tokens", "capacity", "session_expired",
)
THROTTLE_CLASSES = ("throttled_connections", "throttled_tokens", "capacity", "session_expired")

_BOOLS = {"complete": False, "valid": True, "expectations_ok": True}
_INTS = ("turn_index", "active_sessions", "audio_bytes")
_FLOATS = ("t_speech_end", "pacing_late_p99_ms", "pacing_late_max_ms", "generator_lag_ms")
_CATS = ("target", "scenario", "kind", "reason")
_OBJECTS = {"marks": dict, "expectations": list, "tool_calls": list, "variant_fields": dict}
_TYPED = "voiceload.typed"  # DataFrame.attrs flag: already typed (attrs survive slicing)


def summary_columns(by: Sequence[str]) -> list[str]:
    """Stable column order of summary.csv for a grouping."""
    return list(by) + list(SCALARS) + [f"{m}_{s}" for m in METRICS for s in STATS]


def _turns_path(src: str | os.PathLike[str]) -> Path:
    p = Path(src)
    return p / "turns.jsonl" if p.is_dir() else p


def load_turns(run_dir_or_jsonl: str | os.PathLike[str]) -> pd.DataFrame:
    """One typed row per turn from a run directory or a turns.jsonl (torn last line tolerated)."""
    path = _turns_path(run_dir_or_jsonl)
    rows = read_jsonl(path) if path.exists() else []
    return typed_turns(pd.DataFrame.from_records(rows) if rows else pd.DataFrame())


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """``records.read_records`` semantics (blank and undecodable lines skipped), ~4x faster via orjson.

    orjson rejects the bare ``NaN`` that ``json.dumps`` can write, so such a line falls back to ``json``.
    """
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency
        return [r for r in read_records(path) if isinstance(r, dict)]
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def typed_turns(df: pd.DataFrame | Iterable[Mapping[str, Any]] | None) -> pd.DataFrame:
    """Give a raw frame (or records) every TurnRecord column with a stable dtype; idempotent."""
    if isinstance(df, pd.DataFrame) and df.attrs.get(_TYPED):
        return df
    if df is None:
        df = pd.DataFrame()
    elif not isinstance(df, pd.DataFrame):
        df = pd.DataFrame.from_records([r.to_dict() if isinstance(r, TurnRecord) else dict(r) for r in df])
    n = len(df)
    defaults = TurnRecord()
    out: dict[str, Any] = {}
    for col in COLUMNS:
        raw = df[col] if col in df.columns else None
        if col in METRICS or col in _FLOATS:
            default = getattr(defaults, col)
            out[col] = (pd.to_numeric(raw, errors="coerce").astype("float64").to_numpy() if raw is not None
                        else np.full(n, np.nan if default is None else float(default)))
        elif col in _BOOLS:
            out[col] = (raw.astype("object").where(raw.notna(), _BOOLS[col]).astype(bool).to_numpy()
                        if raw is not None else np.full(n, _BOOLS[col]))
        elif col in _INTS:
            out[col] = (pd.to_numeric(raw, errors="coerce").fillna(0).astype("int64").to_numpy()
                        if raw is not None else np.zeros(n, dtype="int64"))
        elif col in _OBJECTS:
            kind = _OBJECTS[col]
            vals = raw.tolist() if raw is not None else [None] * n
            out[col] = pd.Series([v if isinstance(v, kind) else kind() for v in vals], dtype=object)
        else:
            default = getattr(defaults, col)
            out[col] = (raw.astype("object").where(raw.notna(), default).astype(str).to_numpy()
                        if raw is not None else np.full(n, default, dtype=object))
    res = pd.DataFrame(out, index=pd.RangeIndex(n))
    for col in _CATS:
        if col == "reason":
            extra = sorted(set(res[col].unique()) - set(REASONS))
            res[col] = pd.Categorical(res[col], categories=list(REASONS) + extra)
        else:
            res[col] = res[col].astype("category")
    t = res["t_speech_end"].where(res["t_speech_end"] > 0)
    res["time"] = pd.to_datetime(t, unit="s", utc=True)
    res.attrs[_TYPED] = True
    return res


def load_sessions(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One typed row per session from ``sessions.jsonl`` (empty frame with all columns if missing)."""
    p = Path(run_dir)
    path = p / "sessions.jsonl" if p.is_dir() else p
    rows = read_jsonl(path) if path.exists() else []
    cols = [f.name for f in dataclasses.fields(SessionRecord)]
    df = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=cols)
    for col in cols:
        if col not in df.columns:
            df[col] = getattr(SessionRecord(), col)
    df = df[cols + [c for c in df.columns if c not in cols]].copy()
    for col in ("t_start", "t_end", "backoff_ms", "connect_ms", "pacing_late_p50_ms", "pacing_late_p99_ms",
                "pacing_late_max_ms"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in ("http_status", "close_code"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    for col in ("connect_attempts", "turns_attempted", "turns_recorded", "frames_sent"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
    for col in ("run_id", "scenario", "target", "worker", "session_id", "server_session_id", "error"):
        df[col] = df[col].astype("object").where(df[col].notna(), "").astype(str)
    outcomes = list(SESSION_OUTCOMES) + sorted(set(df["outcome"].astype(str)) - set(SESSION_OUTCOMES))
    df["outcome"] = pd.Categorical(df["outcome"].astype(str), categories=outcomes)
    df["target"] = df["target"].astype("category")
    return df


# -- the one aggregation -------------------------------------------------------------------------------
def metric_stats(values: np.ndarray | pd.Series, stats: Sequence[str] = STATS) -> dict[str, float]:
    """Stats of one metric's values (NaN dropped); every stat is NaN (count 0) when no value is left."""
    v = np.asarray(values, dtype="float64")
    v = v[~np.isnan(v)]
    out: dict[str, float] = {}
    pct = [s for s in stats if s in PERCENTILES]
    if v.size and pct:
        out.update(zip(pct, np.percentile(v, [PERCENTILES[s] for s in pct]).tolist()))
    for s in stats:
        if s == "count":
            out[s] = float(v.size)
        elif s in PERCENTILES:
            out.setdefault(s, math.nan)
        elif s in ("min", "max", "mean"):
            out[s] = float(getattr(np, s)(v)) if v.size else math.nan
        else:
            raise ValueError(f"unknown stat {s!r}; expected one of {', '.join(STATS)}")
    return out


def measured(df: pd.DataFrame, include_invalid: bool = False) -> pd.DataFrame:
    """The turns that count for latency/quality statistics: valid ones unless told otherwise."""
    return df if include_invalid else df[df["valid"].to_numpy(dtype=bool)]


def group_stats(df: pd.DataFrame, *, metrics: Sequence[str] = METRICS, stats: Sequence[str] = STATS,
                include_invalid: bool = False) -> dict[str, float]:
    """Scalars + ``<metric>_<stat>`` for one group of typed turns.

    ``count``, ``valid``, ``invalid`` and the ``reason_*`` columns count every turn (so they add up to
    ``count``); ``completeness``, ``failures``, the expectation rate and all metric stats use valid turns
    only, because an invalid turn measured the load generator, not the service.
    """
    throttled = df["throttle"].to_numpy(dtype=object) != "" if len(df) else np.zeros(0, dtype=bool)
    m = measured(df[~throttled] if throttled.any() else df, include_invalid)
    n_all, n = len(df), len(m)
    done = m["complete"].to_numpy(dtype=bool)
    complete = int(done.sum())
    # Barge-in: the interrupted turn's expected outcome (expect.reason held) is not a failure.
    expected = sum(ended_as_expected(False, e) for e in m.loc[~done, "expectations"]) if n else 0
    has_exp = m["expectations"].map(len).to_numpy() > 0 if n else np.zeros(0, dtype=bool)
    exp_fail = int((has_exp & ~m["expectations_ok"].to_numpy(dtype=bool)).sum())
    n_valid = int(df["valid"].to_numpy(dtype=bool).sum())
    out: dict[str, float] = {
        "count": n_all, "valid": n_valid, "invalid": n_all - n_valid, "complete": complete,
        "interrupted_as_expected": expected, "failures": n - complete - expected,
        "completeness": (complete + expected) / n if n else math.nan,
        "expectations_checked": int(has_exp.sum()), "expectations_failed": exp_fail,
        "expectations_pass_rate": 1 - exp_fail / has_exp.sum() if has_exp.sum() else math.nan,
    }
    from .tools import tool_scores

    out.update(tool_scores(m))
    counts = df["reason"].value_counts()
    for r in REASONS:
        out[f"reason_{r}"] = int(counts.get(r, 0))
    kinds = df["throttle"].value_counts() if len(df) else {}
    out["throttled"] = int(throttled.sum())
    for k in THROTTLE_CLASSES:
        out[k] = int(kinds.get(k, 0))
    for metric in metrics:
        for s, val in metric_stats(m[metric].to_numpy(), stats).items():
            out[f"{metric}_{s}"] = val
    return out


def summarize(df: pd.DataFrame, by: Sequence[str] = ("target", "scenario"), *,
              include_invalid: bool = False) -> pd.DataFrame:
    """One row per group: counts, completeness, reasons, expectation pass rate, metric stats."""
    df = typed_turns(df)
    by = list(by)
    rows = []
    if len(df):
        for key, g in df.groupby(by, observed=True, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            rows.append({**dict(zip(by, key)), **group_stats(g, include_invalid=include_invalid)})
    out = pd.DataFrame(rows, columns=summary_columns(by))
    ints = [c for c in SCALARS if c not in ("completeness", "expectations_pass_rate", "tool_precision", "tool_recall")]
    out[ints] = out[ints].astype("int64")
    return out


def summary_keys(df: pd.DataFrame) -> tuple[str, ...]:
    """summary.csv's grouping: per target and scenario, and per caller variant when the run had variants."""
    has_variants = "variant" in df.columns and len(df) and bool((df["variant"].astype(str) != "").any())
    return ("target", "scenario", "variant") if has_variants else ("target", "scenario")


def summary_by_variant(df: pd.DataFrame, *, include_invalid: bool = False) -> pd.DataFrame:
    """Which callers the agent fails: WER and completeness per caller variant (scenario variants:)."""
    return summarize(df, by=("target", "variant"), include_invalid=include_invalid)


def summary_by_turn(df: pd.DataFrame, *, include_invalid: bool = False) -> pd.DataFrame:
    """The summary per conversation step: which turn of the script is slow or failing."""
    return summarize(df, by=("target", "turn_index", "fixture"), include_invalid=include_invalid)


def target_order(df: pd.DataFrame, meta: Mapping[str, Any] | None = None, *,
                 include_unseen: bool = False) -> list[str]:
    """Targets in run.json's order, then by first appearance: the first one is the baseline.

    ``include_unseen`` keeps targets listed in run.json that recorded no turn (a gate must fail them).
    """
    seen = [str(t) for t in pd.unique(df["target"].astype(str))] if len(df) else []
    listed = [str(t.get("name")) for t in (meta or {}).get("targets") or [] if isinstance(t, dict) and t.get("name")]
    return [t for t in listed if include_unseen or t in seen] + [t for t in seen if t not in listed]


# -- files ---------------------------------------------------------------------------------------------
def turns_csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """turns.csv: every TurnRecord column in contract order, then ``time``; dicts/lists as JSON."""
    out = df[list(COLUMNS)].copy()
    try:
        import orjson

        def dumps(v: Any) -> str:
            return orjson.dumps(v, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except ImportError:  # pragma: no cover
        def dumps(v: Any) -> str:
            return json.dumps(v, separators=(",", ":"), default=str)
    for col in _OBJECTS:
        out[col] = [dumps(v) for v in df[col]]
    out["time"] = df["time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if len(df) else pd.Series(dtype=str)
    return out


def write_tables(run_dir: str | os.PathLike[str], df: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write ``turns.csv`` and ``summary.csv`` (by target, scenario) into the run directory."""
    run_dir = Path(run_dir)
    df = load_turns(run_dir) if df is None else df
    paths = {"turns.csv": run_dir / "turns.csv", "summary.csv": run_dir / "summary.csv"}
    turns_csv_frame(df).to_csv(paths["turns.csv"], index=False)
    summarize(df, by=summary_keys(df)).to_csv(paths["summary.csv"], index=False, float_format="%.6g")
    return paths


def read_meta(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """run.json as a dict; ``{}`` when missing or unreadable (every key is optional)."""
    try:
        data = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
