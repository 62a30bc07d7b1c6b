"""Test hook (tests/test_run_signals.py): a signal to this very process at an exact step, not at a guessed delay.

    VOICELOAD_TEST_SIGNAL=SIGTERM@fork            right after the first fork, inside Python's at-fork hook
                                                  (the embedded simulator's spawn), where an exception is dropped
    VOICELOAD_TEST_SIGNAL=SIGTERM@write:NAME      when the process first opens a file named NAME for writing

Loaded as ``sitecustomize`` by putting this directory on PYTHONPATH. The variable is removed at once, so
child processes (the simulator) are not signalled.
"""

import os
import signal
import sys

_spec = os.environ.pop("VOICELOAD_TEST_SIGNAL", "")
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
    elif _where.startswith("write:"):
        _file = _where[len("write:"):]

        def _audit(event: str, args: tuple) -> None:
            if event == "open" and isinstance(args[0], str) and os.path.basename(args[0]) == _file \
                    and isinstance(args[1], str) and "w" in args[1]:
                _fire()

        sys.addaudithook(_audit)
    else:
        raise SystemExit(f"VOICELOAD_TEST_SIGNAL: unknown step {_where!r}")
