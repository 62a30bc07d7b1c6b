"""Conversations that follow the agent: a turn picks the caller's next line from the response transcript.

In a scenario::

    max_turns: 8                         # bound on turns per session (required if the script can loop)
    conversation:
      - id: ask
        fixture: cs_order_status
        branches:                        # tried in order after the response; the first match wins
          - when: {response_matches: "order number"}   # regex, case-insensitive, on the response transcript
            goto: give_number            # a turn id, or `end`
          - turns: [cs_speak_agent]      # no `when`: otherwise; inline turns, then on after `ask`
      - id: wrap_up
        fixture: cs_double_charge
        goto: end                        # an unconditional jump after this turn
      - id: give_number
        fixture: cs_reset_password

Parsing keeps the scenario a flat list of turns (inline turns appended after the top-level ones, so a
script without branches is spoken exactly as before) where each turn knows its successor and its
branches by index; :func:`next_turn` is all the caller needs at run time. Records carry each turn's
id (``turn_id``) and the session's path (``path``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from . import schema as s

if TYPE_CHECKING:
    from .scenario import TurnSpec

END = "end"
MAX_TURNS = 10_000


@dataclass
class Branch:
    """``when`` matched (or no ``when``: otherwise) -> the caller's next turn (None: end the session)."""

    pattern: re.Pattern[str] | None
    goto: str | None = None  # a turn id or END, as written
    turns: list["TurnSpec"] = field(default_factory=list)  # inline turns, as written
    target: int | None = None  # resolved: index into Scenario.conversation, None = end
    path: str = ""
    otherwise: bool = False  # no `when`: taken when no branch before it matched


def parse_links(spec: "TurnSpec", raw: dict[str, Any], path: str, p: s.Problems,
                parse_turn: Callable[[Any, str], "TurnSpec"]) -> None:
    """Read a turn's ``id``, ``goto`` and ``branches`` into ``spec`` (targets are resolved by :func:`link`)."""
    spec.id = s.get_str(raw, "id", path, p) or ""
    if spec.id == END:
        p.add(s.join(path, "id"), f"'{END}' is reserved: goto: {END} ends the session")
    spec.goto = s.get_str(raw, "goto", path, p)
    for j, b in enumerate(s.get_list(raw, "branches", path, p)):
        bpath = f"{s.join(path, 'branches')}[{j}]"
        if not isinstance(b, dict):
            p.add(bpath, f"expected a mapping with when and goto or turns, got {b!r}")
            continue
        s.check_keys(b, ("when", "goto", "turns"), bpath, p)
        when = s.get_dict(b, "when", bpath, p)
        wpath = s.join(bpath, "when")
        s.check_keys(when, ("response_matches",), wpath, p)
        pattern = None
        text = s.get_str(when, "response_matches", wpath, p)
        if text is not None:
            try:
                pattern = re.compile(text, re.IGNORECASE)
            except re.error as exc:
                p.add(s.join(wpath, "response_matches"), f"invalid regular expression: {exc}")
        elif "when" in b:
            p.add(wpath, "needs response_matches (or leave out when for an otherwise branch)")
        goto = s.get_str(b, "goto", bpath, p)
        inline = [parse_turn(t, f"{s.join(bpath, 'turns')}[{k}]") for k, t in enumerate(s.get_list(b, "turns", bpath, p))]
        if (goto is None) == (not inline):
            p.add(bpath, "give either goto (a turn id or end) or turns (inline turns)")
        spec.branches.append(Branch(pattern=pattern, goto=goto, turns=inline, path=bpath, otherwise="when" not in b))
    for b in spec.branches[:-1]:
        if b.otherwise:
            p.add(b.path, "an otherwise branch (no when) must be the last one")


def link(conversation: list["TurnSpec"], data: dict[str, Any], p: s.Problems) -> tuple[list[str], int | None]:
    """Flatten inline turns into ``conversation`` (in place), give every turn an id, its successor and its
    branch targets; check goto targets and loops. Returns each turn's field path and ``max_turns``."""
    max_turns = s.get_int(data, "max_turns", "", p, None, lo=1, hi=MAX_TURNS)
    paths = [f"conversation[{i}]" for i in range(len(conversation))]
    tails: list[tuple[int, int]] = []  # (last inline turn, the turn it branched from): resumes where that one goes
    _sequence(list(range(len(conversation))), conversation, paths, tails, "")
    ids: dict[str, int] = {}
    for i, t in enumerate(conversation):
        if t.id in ids:
            p.add(s.join(paths[i], "id"), f"duplicate turn id {t.id!r} (also {paths[ids[t.id]]})")
        ids.setdefault(t.id, i)

    def resolve(target: str, where: str) -> int | None:
        if target == END:
            return None
        if target not in ids:
            known = ", ".join(list(ids)[:12])
            p.add(where, f"unknown turn id {target!r} (known: {known}, or {END})")
            return None
        return ids[target]

    for i, t in enumerate(conversation):
        if t.goto is not None:
            t.next = resolve(t.goto, s.join(paths[i], "goto"))
        for b in t.branches:
            if b.goto is not None:
                b.target = resolve(b.goto, s.join(b.path, "goto"))
    for last, parent in tails:  # in creation order: an outer branch's tail before the branches inside it
        if conversation[last].goto is None:
            conversation[last].next = conversation[parent].next
    for i, t in enumerate(conversation):  # a choice is made on the whole response: nothing left to interrupt
        for b in t.branches:
            if b.target is not None and conversation[b.target].barge_in_after_ms is not None:
                p.add(s.join(paths[b.target], "barge_in_after_ms"),
                      f"follows the branching turn {t.id!r}, which waits for the whole response before choosing")
    loop = _cycle(conversation)
    if loop and max_turns is None:
        names = " → ".join(conversation[i].id for i in loop)
        p.add("max_turns", f"the conversation can loop ({names}); set max_turns to bound the turns per session")
    return paths, max_turns


def _sequence(index: list[int], flat: list["TurnSpec"], paths: list[str], tails: list[tuple[int, int]],
              prefix: str) -> None:
    """Ids and default successors along one written sequence, then the same for every inline branch under it."""
    for k, i in enumerate(index):
        t = flat[i]
        t.id = t.id or f"{prefix}{k}"
        t.next = index[k + 1] if k + 1 < len(index) else None
    for i in index:
        t = flat[i]
        for j, b in enumerate(t.branches):
            if not b.turns:
                continue
            start = len(flat)
            flat.extend(b.turns)
            paths.extend(f"{s.join(b.path, 'turns')}[{k}]" for k in range(len(b.turns)))
            b.target = start
            tails.append((len(flat) - 1, i))
            _sequence(list(range(start, len(flat))), flat, paths, tails, f"{t.id}.{j}.")


def _cycle(conversation: list["TurnSpec"]) -> list[int]:
    """A loop reachable from the first turn (as turn indices, first repeated at the end), or []."""
    state: dict[int, int] = {}  # 1 on the stack, 2 done
    stack: list[int] = []

    def visit(i: int) -> list[int]:
        state[i] = 1
        stack.append(i)
        t = conversation[i]
        fallthrough = [] if any(b.otherwise for b in t.branches) else [t.next]  # an otherwise branch takes all else
        for j in [*(b.target for b in t.branches), *fallthrough]:
            if j is None:
                continue
            if state.get(j) == 1:
                return stack[stack.index(j):] + [j]
            if j not in state:
                found = visit(j)
                if found:
                    return found
        stack.pop()
        state[i] = 2
        return []

    return visit(0) if conversation else []


def next_turn(spec: "TurnSpec", response_transcript: str) -> int | None:
    """The index of the caller's next turn after ``spec`` given what the agent said (None: hang up)."""
    for b in spec.branches:
        if b.pattern is None or b.pattern.search(response_transcript):
            return b.target
    return spec.next


def turn_limit(conversation: list["TurnSpec"], max_turns: int | None) -> int:
    """Turns one session may speak: max_turns, else every turn once (a script without loops)."""
    return max_turns if max_turns is not None else len(conversation)
