"""docs/scenarios.md cannot drift from the parser: it is generated from the parser's declarations, and
a field added to the parser shows up in it with nothing else to edit (issue 11, scenario reference)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness import declarations
from harness import schema as s
from harness import scenario_docs

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_reference_is_current():
    shipped = scenario_docs.SHIPPED.read_text(encoding="utf-8")
    assert shipped == scenario_docs.render(), (
        f"docs/scenarios.md is out of date with the scenario parser: run `{scenario_docs.COMMAND}` to regenerate it")


def test_every_field_the_parser_reads_is_documented_with_type_default_and_example():
    text = scenario_docs.SHIPPED.read_text(encoding="utf-8")
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ") for line in text.splitlines()
            if line.startswith("| `") and len(line.split(" | ")) >= 5}  # the field table, not the shapes
    names = [f.name for f in declarations.fields() if f.path and f.path[-1] != declarations.ITEMS]
    assert names and [n for n in names if n not in rows] == []
    for name in ("load.abort_on.refused_sessions", "conversation[].expect.reason", "load.duration"):
        assert name in rows
    field, kind, default, example = rows["load.abort_on.refused_sessions"][:4]
    assert kind == "integer 0…100000" and default == "`3`" and example == "`3`"
    assert all(r[3].strip() not in ("", "``") for r in rows.values())  # every field has an example
    assert "| `arrivals` |" in text or "| `flat` |" in text  # the shapes' parameters


def test_a_field_added_to_the_parser_appears_without_editing_anything():
    def parser(doc):  # the real parser plus one new field, read the way every field is read
        p = s.Problems([])
        s.check_keys(doc, ("zz_new_knob",), "", p)
        s.get_int(doc, "zz_new_knob", "", p, 7, lo=1, hi=9)
        declarations._default_parser(doc)

    text = scenario_docs.render(declarations.walk(parser, seeds=[{}]))
    assert "| `zz_new_knob` | integer 1…9 | `7` | `7` |" in text


def test_the_regeneration_command_writes_the_page(tmp_path):
    out = tmp_path / "scenarios.md"
    proc = subprocess.run([sys.executable, "-m", "harness.scenario_docs", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text(encoding="utf-8") == scenario_docs.SHIPPED.read_text(encoding="utf-8")


def test_help_prints_usage_and_writes_nothing(tmp_path):
    """``--help`` once wrote the reference to a file called ``--help``."""
    for module in ("harness.scenario_docs", "harness.scenario_schema"):
        run = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60, env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert run.returncode == 0 and run.stdout.startswith("usage:"), run.stdout + run.stderr
        assert list(tmp_path.iterdir()) == []
