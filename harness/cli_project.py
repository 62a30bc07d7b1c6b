"""``voiceload init``, ``schema`` and ``locustfile``: starting a project outside the repository.

Kept apart from harness/cli.py (the run/report commands) so each concern has its own module; cli.py
only calls :func:`add_commands`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .exitcodes import EXIT_OK, EXIT_USAGE


def add_commands(sub: Any) -> None:
    i = sub.add_parser("init", help="write a commented starter scenario that runs as written")
    from .starter import MODES, USE_CASES

    i.add_argument("path", nargs="?", default=None, help="file to write (a directory gets voiceload.yaml; "
                                                         "default ./voiceload.yaml)")
    i.add_argument("--mode", choices=MODES, default="model", help="model mode or Foundry agent mode target")
    i.add_argument("--use-case", choices=USE_CASES, default="customer_service")
    i.add_argument("--force", action="store_true", help="overwrite an existing file")
    i.set_defaults(func=cmd_init)

    sc = sub.add_parser("schema", help="write the scenario JSON Schema (default: print it) for editors and CI")
    sc.add_argument("out", nargs="?", default="-", help="file to write, - for standard output")
    sc.set_defaults(func=lambda a: __import__("harness.scenario_schema", fromlist=["main"]).main([a.out]))

    lf = sub.add_parser("locustfile", help="print the path of the Locust file: locust -f \"$(voiceload locustfile)\"")
    lf.set_defaults(func=cmd_locustfile)


def cmd_init(args: argparse.Namespace) -> int:
    from .starter import write_starter

    try:
        out = write_starter(args.path, args.mode, args.use_case, force=args.force, schema_ref=_schema_ref())
    except (FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {out}\nnext: voiceload validate {out} && voiceload run {out}")
    return EXIT_OK


def _schema_ref() -> str | None:
    """The installed JSON Schema's file URI for the editor line, when the package carries one."""
    from .scenario_schema import SHIPPED

    return SHIPPED.as_uri() if SHIPPED.is_file() else None


def cmd_locustfile(args: argparse.Namespace) -> int:
    from . import paths

    print(paths.locustfile())
    return EXIT_OK
