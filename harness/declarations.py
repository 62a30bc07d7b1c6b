"""The scenario format as data: every field the parser reads, found by recording its accessor calls.

Why record instead of declaring the format a second time: harness/scenario.py and the modules it
calls read every field through the accessors of harness/schema.py (``check_keys``, ``get_int``,
``get_duration``...), whose arguments already say the field's name, type, bounds, default and
choices. Parsing probe documents with those calls recorded (``schema.record``) yields the field
tree, so a field someone adds to the parser appears here with nothing else to edit. Probes are
found automatically: from an empty document, every list gets one mapping item and every allowed
field is tried as a mapping (and, while its type is unknown, as ``true``) until nothing new shows.

Used by harness/scenario_schema.py (the JSON Schema editors read) and by anything that documents the
format field by field (:func:`walk` returns the tree; :func:`fields` flattens it in reading order).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from . import schema as s

ITEMS = "[]"  # path element standing for the items of a list
SCALARS = ("int", "float", "bool", "str", "duration")
MAX_PROBES = 3000  # a bound, not a tuning knob: today's format needs a few hundred

Path = tuple[str, ...]


@dataclass
class Field:
    """One field of the format. ``kinds`` can hold several: ``think_time`` is a duration or a mapping."""

    path: Path
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> the accessor's arguments
    keys: list[str] = field(default_factory=list)  # allowed keys when it may be a mapping (check_keys)
    raw: bool = False  # its keys are checked but the parser read the value itself: shorthands may exist
    ref: Path | None = None  # the same structure as this ancestor (inline turns are turns): not walked again

    @property
    def name(self) -> str:
        """The path as error messages write it: ``conversation[].expect.max_wer``."""
        out = ""
        for part in self.path:
            out += part if part == ITEMS or not out else f".{part}"
        return out

    @property
    def mapping(self) -> bool:
        return bool(self.keys) or "mapping" in self.kinds

    def default(self) -> Any:
        return next((m["default"] for k, m in self.kinds.items() if m.get("default") is not None), None)


def _tokens(path: str) -> list[str | int]:
    """``"targets[0].agent"`` -> ``["targets", 0, "agent"]`` (the parser's own path strings)."""
    out: list[str | int] = []
    for part in filter(None, path.split(".")):
        m = re.fullmatch(r"([^\[]*)((?:\[\d+\])*)", part)
        name, idx = (m.group(1), m.group(2)) if m else (part, "")
        if name:
            out.append(name)
        out.extend(int(i) for i in re.findall(r"\[(\d+)\]", idx))
    return out


def _norm(tokens: list[str | int]) -> Path:
    return tuple(ITEMS if isinstance(t, int) else t for t in tokens)


def _with(doc: dict[str, Any], tokens: list[str | int], value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with ``value`` at ``tokens`` (intermediate mappings and lists made as needed)."""
    import copy

    out = copy.deepcopy(doc)
    node: Any = out
    for i, t in enumerate(tokens):
        last = i == len(tokens) - 1
        nxt = tokens[i + 1] if not last else None
        container: type = list if isinstance(nxt, int) else dict
        if isinstance(t, int):
            while len(node) <= t:
                node.append({})
        if last:
            node[t] = value
        else:
            if not isinstance(node[t] if isinstance(t, int) else node.get(t), container):
                node[t] = container()
            node = node[t]
    return out


def _ancestor_like(tree: dict[Path, Field], path: Path, keys: set[str]) -> Path | None:
    """The nearest proper ancestor that allows exactly these keys (a recursive structure), or None."""
    for k in range(len(path) - 1, 0, -1):
        f = tree.get(path[:k])
        if f is not None and f.ref is None and f.keys and set(f.keys) == keys:
            return path[:k]
    return None


def _default_parser(doc: dict[str, Any]) -> None:
    from .scenario import parse_scenario

    parse_scenario(doc, "probe.yaml", env={}, check_fixtures=False)


def _seeds() -> list[dict[str, Any]]:
    """The empty document and the shipped scenarios: they take branches a probe value cannot guess
    (``endpoint: embedded``, each load shape)."""
    import yaml

    from . import paths

    docs: list[dict[str, Any]] = [{}]
    for p in sorted(paths.scenarios_dir().glob("*.yaml")):
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
        if isinstance(doc, dict):
            docs.append(doc)
    return docs


def walk(parse: Callable[[dict[str, Any]], None] | None = None,
         seeds: list[dict[str, Any]] | None = None) -> dict[Path, Field]:
    """Every field ``parse`` reads, keyed by path (root = ``()``), in the order first seen."""
    parse = parse or _default_parser
    tree: dict[Path, Field] = {(): Field(())}
    queue: list[dict[str, Any]] = list(seeds if seeds is not None else _seeds())
    tried: set[tuple[Path, str, tuple[str, ...]]] = set()
    probes = 0
    while queue and probes < MAX_PROBES:
        doc = queue.pop(0)
        probes += 1
        notes: list[s.Note] = []
        previous = s.record(notes)
        try:
            parse(doc)
        except Exception:  # noqa: BLE001 - a probe is meant to be wrong; what was read before matters
            pass
        finally:
            s.record(previous)
        for n in notes:
            where = _tokens(n.path)
            if n.kind == "keys":
                f = tree.setdefault(_norm(where), Field(_norm(where)))
                f.ref = f.ref or _ancestor_like(tree, f.path, set(n.meta["allowed"]))
                f.keys += [k for k in n.meta["allowed"] if k not in f.keys]
                if "mapping" not in f.kinds:
                    f.raw = True
                continue
            at = where + [n.key]  # type: ignore[list-item]
            f = tree.setdefault(_norm(at), Field(_norm(at)))
            f.kinds.setdefault(n.kind, n.meta)
            if n.kind == "mapping":
                f.raw = False
        for n in notes:  # then the next probes: lists get an item, allowed fields a mapping (or true)
            where = _tokens(n.path)
            if any(tree[_norm(where[:k])].ref for k in range(len(where) + 1) if _norm(where[:k]) in tree):
                continue  # inside a recursive structure: its ancestor is walked already
            candidates: list[tuple[list[str | int], Any]] = []
            if n.kind == "list":
                candidates.append((where + [n.key, 0], {}))  # type: ignore[list-item]
            elif n.kind == "keys":
                for k in n.meta["allowed"]:
                    candidates.append((where + [k], {}))
                    known = tree.get(_norm(where + [k]))
                    if known is None or not known.kinds:
                        candidates.append((where + [k], True))
            branch = n.meta.get("allowed", ())  # the keys a branch allows tell one branch from another
            for at, value in candidates:
                key = (_norm(at), repr(value), branch)
                if key not in tried:
                    tried.add(key)
                    queue.append(_with(doc, at, value))
    for path, f in list(tree.items()):  # allowed fields the parser reads itself (any value) and their parents
        for k in f.keys:
            tree.setdefault(path + (k,), Field(path + (k,)))
        for i in range(len(path)):
            tree.setdefault(path[:i], Field(path[:i]))
    return tree


def fields(tree: dict[Path, Field] | None = None) -> list[Field]:
    """The tree flattened, parents before children, siblings in the order the parser allows them."""
    tree = tree if tree is not None else walk()
    out: list[Field] = []

    def visit(path: Path) -> None:
        f = tree[path]
        out.append(f)
        if f.ref is not None:
            return  # described at its ancestor
        children = [p for p in tree if len(p) == len(path) + 1 and p[: len(path)] == path]
        order = {k: i for i, k in enumerate(f.keys)}
        for child in sorted(children, key=lambda p: order.get(p[-1], len(order))):
            visit(child)

    visit(())
    return out


def write_generated(render: Callable[[], str], shipped: Any, argv: list[str] | None = None) -> int:
    """``python -m`` entry of a file generated from these declarations (the JSON Schema, docs/scenarios.md):
    write ``shipped`` (or the path given; ``-`` prints it)."""
    import argparse
    import sys
    from pathlib import Path as _P

    ap = argparse.ArgumentParser(description=f"Regenerate {_P(str(shipped)).name} from the scenario parser's "
                                 "declarations.")
    ap.add_argument("out", nargs="?", default=str(shipped), help=f"where to write it (default {shipped}; - prints it)")
    out = ap.parse_args(sys.argv[1:] if argv is None else argv).out
    text = render()
    if out == "-":
        sys.stdout.write(text)
    else:
        _P(out).write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    return 0
