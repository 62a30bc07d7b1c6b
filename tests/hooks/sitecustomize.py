"""Test hook (tests/test_run_signals.py): a signal to this very process at an exact step, not at a guessed delay.

    VOICELOAD_TEST_SIGNAL=SIGTERM@fork            right after the first fork, inside Python's at-fork hook
                                                  (the embedded simulator's spawn), where an exception is dropped
    VOICELOAD_TEST_SIGNAL=SIGTERM@write:NAME      when the process first opens a file named NAME for writing
    VOICELOAD_TEST_SIGNAL=SIGTERM@open:NAME       when it first opens a file named NAME (reading the scenario)
    VOICELOAD_TEST_SIGNAL=SIGTERM@import:MODULE   when it first imports MODULE (the command line being parsed)
    VOICELOAD_TEST_SIGNAL=SIGTERM@child           from its first Python child (the embedded simulator) as that
                                                  child starts, which then never gets to listen: the process
                                                  is signalled while it waits for the "listening" line

Loaded as ``sitecustomize`` by putting this directory on PYTHONPATH. The variable is removed at once, so
child processes (the simulator) are not signalled.
"""

import os
import signal
import sys
import time

_spec = os.environ.pop("VOICELOAD_TEST_SIGNAL", "")
_parent = os.environ.pop("VOICELOAD_TEST_SIGNAL_PARENT", "")
if _parent:  # the child of a process started with SIGNAL@child
    os.kill(os.getppid(), getattr(signal, _parent))
    time.sleep(60)  # "starting" far beyond the parent's 15 s start-up timeout: only the signal can end its wait
if _spec:
    _name, _, _where = _spec.partition("@")
    _sig = getattr(signal, _name)
    _fired = []

    def _fire() -> None:
        if not _fired:
            _fired.append(True)
            os.kill(os.getpid(), _sig)
            _fired.append(sum(range(100)))  # a few bytecodes: Python runs the handler here, inside this hook

    if _where == "fork":
        os.register_at_fork(after_in_parent=_fire)
    elif _where == "child":
        os.environ["VOICELOAD_TEST_SIGNAL_PARENT"] = _name
    elif _where.startswith(("write:", "open:")):
        _mode, _, _file = _where.partition(":")

        def _audit(event: str, args: tuple) -> None:
            if event == "open" and isinstance(args[0], str) and os.path.basename(args[0]) == _file \
                    and (_mode == "open" or isinstance(args[1], str) and "w" in args[1]):
                _fire()

        sys.addaudithook(_audit)
    elif _where.startswith("import:"):
        _module = _where[len("import:"):]
        sys.addaudithook(lambda event, args: _fire() if event == "import" and args[0] == _module else None)
    else:
        raise SystemExit(f"VOICELOAD_TEST_SIGNAL: unknown step {_where!r}")
