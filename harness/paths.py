"""Where the data that ships with voiceload lives: beside the code in a wheel, at the repo root in a checkout.

A wheel carries the fixture library, the simulator profiles and the example scenarios under
``harness/_shipped/`` (``setup.py`` copies them there at build time from the directories named in
:data:`SHIPPED`); a source checkout or an editable install reads the same files where they are
edited. Everything else (user fixtures, caches, reports) lives beside the user's scenarios or in
the working directory, never inside the installed package. Standard library only: ``setup.py``
reads :data:`SHIPPED` from this file before the package's dependencies are installed.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
SHIPPED_DIR = PACKAGE / "_shipped"

# name in the wheel -> (directory in the repository, file patterns copied)
SHIPPED: dict[str, tuple[str, tuple[str, ...]]] = {
    "audio_fixtures": ("audio_fixtures", ("manifest.yaml", "*.wav", "README.md")),
    "profiles": ("scenarios/profiles", ("*.yaml",)),
    "scenarios": ("scenarios", ("*.yaml",)),
}


def shipped(name: str) -> Path:
    """The shipped directory ``name`` (a key of :data:`SHIPPED`): the wheel's copy, else the checkout's."""
    inside = SHIPPED_DIR / name
    return inside if inside.is_dir() else REPO / SHIPPED[name][0]


def builtin_fixtures() -> Path:
    return shipped("audio_fixtures")


def profiles_dir() -> Path:
    return shipped("profiles")


def scenarios_dir() -> Path:
    return shipped("scenarios")


def locustfile() -> Path:
    """The Locust file of this installation, for ``locust -f "$(voiceload locustfile)"``."""
    return PACKAGE / "locustfile.py"
