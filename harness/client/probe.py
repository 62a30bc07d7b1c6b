"""``voiceload validate --connect``: one short session per target, with a precise diagnosis.

It runs the real engine (same URL, auth, session.update and a one-turn conversation), so a green
probe means the load test itself will connect; failures are explained without printing secrets.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from .. import diagnosis, redaction
from ..scenario import Scenario
from .endpoints import open_endpoints
from .session import CallerSession, SessionOptions


def probe_targets(scenario: Scenario, out: Any = sys.stdout) -> int:
    one_turn = dataclasses.replace(scenario, conversation=scenario.conversation[:1])
    from ..tts.prepare import SpeechError, prepare_speech  # a say: first turn is synthesised (or cached) first

    try:
        prepare_speech(one_turn)
    except SpeechError as exc:
        print(f"  ✗ {redaction.redact(str(exc))}", file=out)
        return 2
    rc = 0
    try:
        with open_endpoints(one_turn) as endpoints:
            for endpoint in endpoints:
                rc = max(rc, _probe(one_turn, endpoint, out))
    except Exception as exc:  # credential or simulator start-up problems
        print(f"  ✗ cannot prepare targets: {redaction.redact(diagnosis.diagnose(exc))}", file=out)
        return 1
    return rc


def _probe(scenario: Scenario, endpoint: Any, out: Any) -> int:
    print(f"  → {endpoint.name}: {redaction.redact(endpoint.display)}", file=out)
    try:
        session = CallerSession(scenario, endpoint, SessionOptions(session_id="probe"))
        rec = session.run()
    except Exception as exc:
        print(f"  ✗ {endpoint.name}: {redaction.redact(diagnosis.diagnose(exc))}", file=out)
        return 1
    if rec.outcome in ("rejected", "connect_error"):
        why = diagnosis.diagnose(rec.http_status) if rec.http_status else rec.error
        print(f"  ✗ {endpoint.name}: {redaction.redact(why)}", file=out)
        return 1
    if not rec.server_session_id and rec.connect_ms is None:  # e.g. no Entra token: never reached the host
        print(f"  ✗ {endpoint.name}: could not connect: {redaction.redact(rec.error)}", file=out)
        return 1
    if not session.records:
        print(f"  ✗ {endpoint.name}: connected but the session was not configured: {redaction.redact(rec.error)}",
              file=out)
        return 1
    turn = session.records[0]
    status = "✓" if turn.complete else "✗"
    print(f"  {status} {endpoint.name}: connected in {rec.connect_ms:.0f} ms, session {rec.server_session_id}, "
          f"turn {turn.reason}, first audio {turn.first_audio_ms} ms, transcript {turn.input_transcript!r}",
          file=out)
    return 0 if turn.complete else 1
