"""Small declarative validation for YAML documents: every error names the file and field path.

Why not pydantic/jsonschema: the messages we want ("scenarios/x.yaml: load.users: expected an integer
≥ 1, got 'ten'") and ${VAR} interpolation are a few dozen lines; a dependency would not shorten them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


@dataclass(frozen=True)
class Note:
    """One thing a parser asked an accessor below to read: the declarations harness.declarations walks
    (for the JSON Schema and the field reference), so the parser stays the one source of truth."""

    kind: str  # keys | int | float | bool | str | duration | mapping | list
    path: str  # the parent's field path, as in error messages ("load", "conversation[0].expect")
    key: str | None  # the field read (None for "keys": ``meta["allowed"]`` lists them)
    meta: dict[str, Any]


_trace: list[Note] | None = None  # set only while harness.declarations records a probe parse


def record(notes: list[Note] | None) -> list[Note] | None:
    """Start (a list) or stop (None) recording accessor calls; returns the previous recorder."""
    global _trace
    previous, _trace = _trace, notes
    return previous


class ValidationError(ValueError):
    """All problems found in one document; ``str()`` lists one ``file: path: message`` per line."""

    def __init__(self, file: str, problems: list[tuple[str, str]]):
        self.file = file
        self.problems = problems
        super().__init__("\n".join(f"{file}: {path or '<root>'}: {msg}" for path, msg in problems))


@dataclass
class Problems:
    """Collector that lets validation continue after the first problem."""

    items: list[tuple[str, str]]

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def __bool__(self) -> bool:
        return bool(self.items)


def interpolate(value: Any, path: str, problems: Problems, env: dict[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in string scalars from the environment, nothing else."""
    env = os.environ if env is None else env
    if isinstance(value, dict):
        return {k: interpolate(v, join(path, str(k)), problems, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]", problems, env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.add(path, f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")
        return ""

    out = _VAR.sub(repl, value)
    if "${" in out and not problems:
        problems.add(path, f"malformed ${{...}} reference in {value!r}")
    return out


MAX_NODES = 100_000  # a scenario is a page of YAML; aliases nested 6 deep would expand to millions


def too_large(value: Any, limit: int = MAX_NODES) -> bool:
    """True if the document has more than ``limit`` values counting every alias expansion (stops early)."""
    stack, seen = [value], 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check_keys(data: dict[str, Any], allowed: Iterable[str], path: str, problems: Problems) -> None:
    allowed = list(allowed)
    if _trace is not None:
        _trace.append(Note("keys", path, None, {"allowed": tuple(allowed)}))
    for key in data:
        if key not in allowed:
            hint = _closest(str(key), allowed)
            problems.add(join(path, str(key)), "unknown field" + (f" (did you mean '{hint}'?)" if hint else
                                                                  f" (allowed: {', '.join(allowed)})"))


def _closest(key: str, options: list[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    return m[0] if m else None


def get_int(data: dict[str, Any], key: str, path: str, problems: Problems, default: int | None = None, *,
            lo: int | None = None, hi: int | None = None) -> int | None:
    if _trace is not None:
        _trace.append(Note("int", path, key, {"default": default, "lo": lo, "hi": hi}))
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(join(path, key), f"expected an integer, got {value!r}")
        return default
    return _bounded(value, join(path, key), problems, lo, hi, default)


def get_float(data: dict[str, Any], key: str, path: str, problems: Problems, default: float | None = None, *,
              lo: float | None = None, hi: float | None = None) -> float | None:
    if _trace is not None:
        _trace.append(Note("float", path, key, {"default": default, "lo": lo, "hi": hi}))
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.add(join(path, key), f"expected a number, got {value!r}")
        return default
    return _bounded(float(value), join(path, key), problems, lo, hi, default)


def _bounded(value: Any, path: str, problems: Problems, lo: Any, hi: Any, default: Any) -> Any:
    if lo is not None and value < lo:
        problems.add(path, f"must be ≥ {lo}, got {value}")
        return default
    if hi is not None and value > hi:
        problems.add(path, f"must be ≤ {hi}, got {value}")
        return default
    return value


def get_bool(data: dict[str, Any], key: str, path: str, problems: Problems, default: bool = False) -> bool:
    if _trace is not None:
        _trace.append(Note("bool", path, key, {"default": default}))
    value = data.get(key, default)
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    if not isinstance(value, bool):
        problems.add(join(path, key), f"expected true or false, got {value!r}")
        return default
    return value


def get_str(data: dict[str, Any], key: str, path: str, problems: Problems, default: str | None = None, *,
            choices: Iterable[str] | None = None) -> str | None:
    choices = None if choices is None else tuple(choices)
    if _trace is not None:
        _trace.append(Note("str", path, key, {"default": default, "choices": choices}))
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        problems.add(join(path, key), f"expected a string, got {type(value).__name__}")
        return default
    if choices is not None:
        choices = list(choices)
        if value not in choices:
            problems.add(join(path, key), f"expected one of {', '.join(choices)}, got {value!r}")
            return default
    return value


def get_dict(data: dict[str, Any], key: str, path: str, problems: Problems) -> dict[str, Any]:
    if _trace is not None:
        _trace.append(Note("mapping", path, key, {}))
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(join(path, key), f"expected a mapping, got {type(value).__name__}")
        return {}
    return value


def get_list(data: dict[str, Any], key: str, path: str, problems: Problems) -> list[Any]:
    if _trace is not None:
        _trace.append(Note("list", path, key, {}))
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(join(path, key), f"expected a list, got {type(value).__name__}")
        return []
    return value


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 60s, 5m or 1h, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration must be ≥ 0, got {value}")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        m = _DURATION.match(text)
        if m and text and any(m.groups()):
            h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
            return h * 3600 + mi * 60 + s + ms / 1000
    raise ValueError(f"expected a duration like 60s, 5m or 1h, got {value!r}")


def get_duration(data: dict[str, Any], key: str, path: str, problems: Problems, default: float | None = None, *,
                 lo: float = 0.0, hi: float | None = None) -> float | None:
    if _trace is not None:
        _trace.append(Note("duration", path, key, {"default": default, "lo": lo, "hi": hi}))
    if data.get(key) is None:
        return default
    try:
        seconds = parse_duration(data[key])
    except ValueError as exc:
        problems.add(join(path, key), str(exc))
        return default
    return _bounded(seconds, join(path, key), problems, lo, hi, default)


Check = Callable[[Any, str, Problems], None]
