"""JSON Schema for scenario files, generated from the parser's own declarations (harness/declarations.py).

Editors (the YAML language server) read it through the ``# yaml-language-server: $schema=...`` line
at the top of a scenario to complete field names and flag wrong types and bounds as you type. It
is looser than ``voiceload validate``, never stricter: cross-field rules, ``${VAR}`` values, fixture
ids and the session block (checked against the protocol by harness/protocol/session.py) stay with
the validator. Regenerate the shipped copy after changing what the parser reads::

    python -m harness.scenario_schema            # writes harness/scenario.schema.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .declarations import ITEMS, Field, walk, write_generated

SHIPPED = Path(__file__).resolve().parent / "scenario.schema.json"
ID = "https://voiceload.dev/schemas/scenario.schema.json"
INTERPOLATED = {"type": "string", "pattern": r"\$\{"}  # ${VAR} or ${VAR:-default}: checked once resolved
DURATION = {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?|(\d+(\.\d+)?h)?(\d+(\.\d+)?m)?(\d+(\.\d+)?s)?(\d+ms)?)\s*$"}
SCALAR = {"type": ["string", "number", "boolean", "null"]}


def _bounded(kind: str, meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    if meta.get("lo") is not None:
        out["minimum"] = meta["lo"]
    if meta.get("hi") is not None:
        out["maximum"] = meta["hi"]
    return out


def _scalar(kind: str, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """What one accessor accepts, as JSON Schema alternatives."""
    if kind == "int":
        return [_bounded("integer", meta), INTERPOLATED, {"type": "null"}]
    if kind == "float":
        return [_bounded("number", meta), INTERPOLATED, {"type": "null"}]
    if kind == "bool":
        return [{"type": "boolean"}, {"enum": ["true", "false", "yes", "no", "1", "0"]}, INTERPOLATED]
    if kind == "duration":
        return [_bounded("number", meta), DURATION, INTERPOLATED, {"type": "null"}]
    if kind == "str":
        if meta.get("choices"):
            return [{"enum": list(meta["choices"])}, INTERPOLATED, {"type": "null"}]
        return [{"type": ["string", "number", "null"]}]
    return [{}]


def _node(tree: dict[tuple[str, ...], Field], path: tuple[str, ...], defs: dict[str, Any]) -> dict[str, Any]:
    """The schema of one field; a structure that recurs (inline turns are turns) is one entry of ``$defs``."""
    f = tree[path]
    if f.ref is not None:
        return {"$ref": f"#/$defs/{tree[f.ref].name}"}
    if any(g.ref == path for g in tree.values()):
        if f.name not in defs:
            defs[f.name] = {}  # placeholder: the walk below meets the reference to itself
            defs[f.name] = _build(tree, path, defs)
        return {"$ref": f"#/$defs/{f.name}"}
    return _build(tree, path, defs)


def _build(tree: dict[tuple[str, ...], Field], path: tuple[str, ...], defs: dict[str, Any]) -> dict[str, Any]:
    f = tree[path]
    if path == ("load", "shape"):
        return _shape()
    alts: list[dict[str, Any]] = []
    for kind, meta in f.kinds.items():
        if kind == "list":
            items = tree.get(path + (ITEMS,))
            alts += [{"type": "array", "items": _node(tree, path + (ITEMS,), defs) if items else {}}, {"type": "null"}]
        elif kind != "mapping":
            alts += _scalar(kind, meta)
    if f.mapping:
        obj: dict[str, Any] = {"type": "object"}
        if f.keys:
            obj["properties"] = {k: _node(tree, path + (k,), defs) for k in f.keys}
            obj["additionalProperties"] = False
        alts.append(obj)
        if "mapping" in f.kinds:
            alts.append({"type": "null"})
        elif f.raw and not f.kinds and path:
            alts.append(SCALAR)  # the parser reads the value itself: a shorthand (``target: embedded``)
    out = _one(alts)
    default = f.default()
    if default is not None and path:
        out["default"] = default
    return out


def _one(alts: list[dict[str, Any]]) -> dict[str, Any]:
    unique: list[dict[str, Any]] = []
    for a in alts:
        if a not in unique:
            unique.append(a)
    if not unique or {} in unique:
        return {}
    return dict(unique[0]) if len(unique) == 1 else {"anyOf": unique}


def _shape() -> dict[str, Any]:
    """``load.shape``: a name, or a mapping whose parameters depend on its type (harness/shapes.py)."""
    from .shapes import _PARAMS, INT_MAX

    kinds = {"int": {"type": "integer", "minimum": 0, "maximum": INT_MAX}, "list": {"type": "array",
             "items": {"type": "string"}}, "duration": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, DURATION]},
             "rate": {"type": ["number", "string"]}}
    alts: list[dict[str, Any]] = [{"enum": list(_PARAMS)}]
    for name, params in _PARAMS.items():
        props: dict[str, Any] = {"type": {"const": name}}
        props.update({k: {"anyOf": [kinds.get(v, {}), INTERPOLATED]} for k, v in params.items()})
        alts.append({"type": "object", "properties": props, **({"required": ["type"]} if name != "flat" else {}),
                     "additionalProperties": False})
    return {"anyOf": alts}


def build() -> dict[str, Any]:
    """The whole schema, deterministic for a given parser (so the shipped copy can be compared)."""
    tree = walk()
    defs: dict[str, Any] = {}
    root = _node(tree, (), defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": ID,
            "title": "voiceload scenario",
            "description": "A voiceload scenario file (generated by `python -m harness.scenario_schema` from "
                           "the parser's declarations; `voiceload validate` checks the rest).",
            **root, **({"$defs": defs} if defs else {})}


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the schema to ``harness/scenario.schema.json`` (or the path given; ``-`` prints it)."""
    return write_generated(render, SHIPPED, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
