"""``python -m bench.report_bench``: how long the report takes for a large run (was a timed unit test).

Builds a synthetic 20 000-turn run (the same generator as tests/test_report_html.py), times
``write_all`` (turns.csv, summary.csv, report.html) five times and writes the median to
bench/results/report-<date>.json. Timing belongs here, not in unit tests: the machines are shared.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import write_result

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_report_html import make_run  # noqa: E402 - the synthetic run lives with the tests

    from harness.report.html import write_all

    n, repeats, times = 20_000, 5, []
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "big", n=n, seed=3)
        for _ in range(repeats):
            t = time.perf_counter()
            write_all(run)
            times.append(time.perf_counter() - t)
    result = {"date": dt.date.today().isoformat(), "turns": n, "repeats": repeats,
              "write_all_s_median": round(statistics.median(times), 3), "write_all_s": [round(x, 3) for x in times]}
    out = write_result("report", result)
    print(f"report for {n} turns: median {result['write_all_s_median']} s over {repeats} runs → {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
