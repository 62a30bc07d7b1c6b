"""The scenario JSON Schema: generated from the parser's declarations, shipped up to date, checked by an
independent validator (jsonschema) against every shipped scenario and the bad-input corpus."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

import test_bad_input
import test_scenario
from harness import schema as s
from harness import scenario_schema
from harness.declarations import fields, walk

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
SCHEMA_LINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")

# Bad inputs only `voiceload validate` can refuse, each with the reason a JSON Schema cannot say it.
# Every other case of the corpus must be rejected by the schema; every case listed here must still be
# accepted by it (so this list shrinks, never silently grows, as the schema learns more).
VALIDATOR_ONLY = {
    "month-long run": "a duration string's value (720h) is bounded only once parsed",
    "zero turn timeout": "a duration string's value (0s) is bounded only once parsed",
    "missing conversation": "required fields are rules in the parser, not accessor declarations",
    "unknown fixture": "fixture ids live in manifest.yaml files on disk",
    "turn without fixture": "required fields are rules in the parser, not accessor declarations",
    "chunk not multiple of 10": "a cross-value rule in the parser",
    "threshold syntax": "threshold expressions are parsed by harness/report/check.py",
    "threshold not string": "threshold items are read by the threshold parser, not an accessor",
    "manual commit with VAD": "a cross-field rule (session.turn_detection vs the turn)",
    "barge-in on first turn": "a cross-field rule (position in the conversation)",
    "breakpoint without hold": "a rule on shape parameters beyond their types",
    "unknown env var": "${VAR} is resolved from the environment at load time",
    "target without endpoint": "a cross-field rule (embedded or endpoint)",
    "both target and targets": "a cross-field rule",
    "duplicate target names": "uniqueness across list items",
    "bad session threshold": "the session block is checked against the protocol (harness/protocol/session.py)",
    "bad VAD type": "the session block is checked against the protocol (harness/protocol/session.py)",
}


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(scenario_schema.SHIPPED.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_schema_is_up_to_date():
    assert scenario_schema.SHIPPED.read_text(encoding="utf-8") == scenario_schema.render(), (
        "harness/scenario.schema.json is out of date with what harness/scenario.py reads: regenerate it with "
        "`python -m harness.scenario_schema` (or `voiceload schema harness/scenario.schema.json`) and commit it")


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_every_shipped_scenario_points_at_the_schema_and_passes_it(path, validator):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = SCHEMA_LINE.match(first)
    assert m, f"{path.name}: first line should be '# yaml-language-server: $schema=../harness/scenario.schema.json'"
    assert (path.parent / m.group(1)).resolve() == scenario_schema.SHIPPED
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(yaml.safe_load(path.read_text(encoding="utf-8")))]
    assert not errors, errors


CORPUS = [(f"{src}: {c[0]}", c[0], c[1]) for src, cases in (("test_bad_input", test_bad_input.CASES),
                                                             ("test_scenario", test_scenario.BAD)) for c in cases]


@pytest.mark.parametrize("case,label,text", CORPUS, ids=[c[0] for c in CORPUS])
def test_the_bad_input_corpus_is_rejected_where_a_schema_can_say_it(case, label, text, validator):
    try:
        doc = yaml.safe_load(textwrap.dedent(text))
    except yaml.YAMLError:
        return  # not YAML at all: the editor's YAML parser says so before any schema
    errors = list(validator.iter_errors(doc))
    if label in VALIDATOR_ONLY:
        assert not errors, f"{case}: the schema now rejects it; drop it from VALIDATOR_ONLY"
    else:
        assert errors, f"{case}: accepted by the schema"


def test_the_schema_names_the_fields_others_declared(validator):
    """Fields added to the parser by other modules (tools, target limits, shapes) appear with no schema edit."""
    names = {f.name for f in fields()}
    for name in ("tools[].executor.latency.kind", "target.limits.tokens_per_minute", "load.think_time.min",
                 "targets[].agent.project_name", "conversation[].expect.reason", "audio.perturb.drop_rate"):
        assert name in names, name
    doc = yaml.safe_load(test_bad_input.GOOD)
    doc["load"]["shape"] = {"type": "arrivals", "rate": "20/min", "max_concurrent": 5}
    assert not list(validator.iter_errors(doc))
    doc["load"]["shape"]["max_users"] = 3  # a step parameter on an arrivals shape
    assert list(validator.iter_errors(doc))


def test_branching_scripts_and_their_inline_turns_are_checked_at_any_depth(validator):
    import test_branching

    doc = yaml.safe_load(test_branching.SCRIPT)
    assert not list(validator.iter_errors(doc))
    inline = doc["conversation"][0]["branches"][1]["turns"]
    inline[0]["branches"] = [{"turns": [{"fixture": "car_eta", "pause_ms": -5}]}]  # a turn inside a turn inside a turn
    errors = list(validator.iter_errors(doc))
    assert errors and any("pause_ms" in str(list(e.absolute_path)) or "pause_ms" in str(e) for e in errors)


def test_a_field_added_to_a_parser_appears_in_the_walk_with_its_bounds_and_choices():
    def parse(doc):
        p = s.Problems([])
        s.check_keys(doc, ("retries", "mode", "backoff", "steps"), "", p)
        s.get_int(doc, "retries", "", p, 3, lo=0, hi=9)
        s.get_str(doc, "mode", "", p, "fast", choices=(m for m in ("fast", "safe")))  # a generator, as callers may
        b = s.get_dict(doc, "backoff", "", p)
        s.check_keys(b, ("first",), "backoff", p)
        s.get_duration(b, "first", "backoff", p, 1.0, lo=0.1)
        for i, step in enumerate(s.get_list(doc, "steps", "", p)):
            if isinstance(step, dict):  # only reached by a probe with one item
                s.check_keys(step, ("say",), f"steps[{i}]", p)
                s.get_str(step, "say", f"steps[{i}]", p)

    tree = {f.name: f for f in fields(walk(parse, seeds=[{}]))}
    assert tree["retries"].kinds["int"] == {"default": 3, "lo": 0, "hi": 9}
    assert tree["mode"].kinds["str"]["choices"] == ("fast", "safe")
    assert tree["backoff"].keys == ["first"] and tree["backoff.first"].kinds["duration"]["lo"] == 0.1
    assert tree["steps[].say"].kinds == {"str": {"default": None, "choices": None}}
    assert s.record(None) is None  # recording is off again after the walk


def test_voiceload_schema_prints_the_same_schema(capsys):
    from harness import cli

    assert cli.main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(scenario_schema.SHIPPED.read_text(encoding="utf-8"))
