"""HTML building blocks shared by report.html and compare.html: CSS, escaping, tables, figures.

Its own module so ``html`` (the run report) and ``compare`` (which report.html embeds) both import
it and never each other.
"""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

import pandas as pd

CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f6f7f9;--card:#fff;--good:#1a7f37;--bad:#c62828;
--warn:#8a5a00;--accent:#2f5fa7}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 -apple-system,"Segoe UI",Roboto,
"DejaVu Sans",Helvetica,Arial,sans-serif}
main{max-width:1320px;margin:0 auto;padding:20px 28px 60px}
header h1{margin:0 0 4px;font-size:24px}
h2{font-size:18px;margin:0 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:18px 0 8px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 20px;margin:16px 0}
nav{margin:10px 0 0;font-size:13px}nav a{color:var(--accent);margin-right:14px;text-decoration:none}
.muted{color:var(--muted)}.small{font-size:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:14px}
.card{border:1px solid var(--line);border-radius:8px;padding:12px 16px;background:#fbfcfd}
.card h3{margin:0 0 6px;font-size:15px}.big{font-size:28px;font-weight:600}
.card dl{display:grid;grid-template-columns:auto auto;gap:2px 12px;margin:8px 0 0}
.card dt{color:var(--muted)}.card dd{margin:0;text-align:right;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600;white-space:nowrap}
tbody tr:nth-child(even){background:#fafbfc}
td.num,th.num{text-align:right}
.scroll{overflow-x:auto}th.grp,td.grp{border-left:2px solid var(--line)}th.grp{text-align:center}
figure{margin:12px 0}figure svg,figure img{width:100%;height:auto;display:block}
.banner{border-radius:8px;padding:12px 16px;margin:16px 0;border:1px solid}
.banner.warn{background:#fff8e1;border-color:#f0c36d;color:var(--warn)}
.banner.bad{background:#fdecea;border-color:#f3a7a0;color:var(--bad)}
.banner.ok{background:#edf7ee;border-color:#a6d5ab;color:var(--good)}
.verdict{padding:1px 7px;border-radius:10px;font-size:12px;white-space:nowrap}
.verdict.bad{background:#fdecea;color:var(--bad)}.verdict.good{background:#e6f4ea;color:var(--good)}
.verdict.neutral{background:#f0f2f5;color:var(--muted)}
.pass{color:var(--good);font-weight:600}.fail{color:var(--bad);font-weight:600}
code,pre{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12px}
pre{background:#f6f8fa;padding:8px;border-radius:6px;overflow-x:auto;white-space:pre-wrap}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
@media (max-width:900px){.grid2{grid-template-columns:1fr}}
"""


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA


def fmt_num(x: Any, pct: bool = False, signed: bool = False) -> str:
    """A number for a table cell: ms to 0 decimals (≥100) or 1, rates as %, '-' for missing."""
    if _nan(x):
        return "-"
    x = float(x)
    sign = "+" if signed else ""
    if pct:
        return f"{x * 100:{sign}.2f}%" if not signed else f"{x * 100:+.2f} pp"
    if abs(x) >= 100:
        return f"{x:{sign},.0f}"
    return f"{x:{sign}.1f}" if abs(x) >= 1 or x == 0 else f"{x:{sign}.3f}"


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>\n{body}\n</main></body></html>\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], num: Sequence[int] = ()) -> str:
    """Table from pre-escaped cell markup; columns listed in ``num`` are right-aligned."""
    th = "".join(f"<th class='num'>{esc(h)}</th>" if i in num else f"<th>{esc(h)}</th>"
                 for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td class='num'>{c}</td>" if i in num else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>"


def section(sid: str, title: str, body: str) -> str:
    return f"<section id='{esc(sid)}'><h2>{esc(title)}</h2>\n{body}\n</section>"


def figure(name: str, svg: str, empty: str = "no data to plot") -> str:
    """A plot wrapped in <figure id="plot-NAME">, or a short note when there was nothing to draw."""
    return f"<figure id='plot-{esc(name)}'>{svg}</figure>" if svg else f"<p class='muted'>{esc(empty)}</p>"
