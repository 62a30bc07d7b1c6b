"""Turn a scenario's targets into connectable endpoints, starting embedded simulators as needed.

Each embedded target gets its own simulator *process* (never the harness's event loop), on a free
loopback port, stopped when the run ends. Real targets get URL and auth from protocol.endpoint and
auth, evaluated at every connect so Entra tokens are refreshed before they expire.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from ..protocol import endpoint as ep
from ..scenario import Scenario, TargetSpec
from .session import Endpoint

EMBEDDED_MODEL = "gpt-realtime"


def embedded_endpoint(name: str, base_url: str) -> Endpoint:
    url = f"{base_url.rstrip('/')}/voice-live/realtime?api-version={ep.DEFAULT_API_VERSION}&model={EMBEDDED_MODEL}"
    return Endpoint(name=name, url=lambda: url, headers=dict, display=url, open_timeout_s=15.0)


def real_endpoint(target: ep.Target) -> Endpoint:
    from ..auth import CredentialProvider

    provider = CredentialProvider(target.auth)

    def url() -> str:
        return ep.build_url(target, secrets=provider.query_secrets())

    display = ep.display_url(ep.build_url(target, secrets={k: "***" for k in ("agent-access-token",)}))
    return Endpoint(name=target.name, url=url, headers=provider.headers, display=display,
                    open_timeout_s=target.open_timeout_s)


def url_endpoint(url: str) -> Endpoint:
    """``--target URL`` from the command line."""
    return real_endpoint(ep.parse_target_url(url))


@contextlib.contextmanager
def open_endpoints(scenario: Scenario, *, run_dir: Path | None = None, override_url: str | None = None,
                   profile: str | None = None, seed: int | None = None) -> Iterator[list[Endpoint]]:
    """Yield one Endpoint per target; embedded simulators live exactly as long as the block."""
    if override_url:
        yield [url_endpoint(override_url)]
        return
    with contextlib.ExitStack() as stack:
        out: list[Endpoint] = []
        for i, spec in enumerate(scenario.targets):
            out.append(_open(spec, stack, run_dir, profile, None if seed is None else seed + i))
        yield out


def _open(spec: TargetSpec, stack: contextlib.ExitStack, run_dir: Path | None, profile: str | None,
          seed: int | None) -> Endpoint:
    if not spec.embedded:
        assert spec.target is not None
        return real_endpoint(spec.target)
    from ..simulator import SimulatorProcess

    truth = str(run_dir / f"truth-{spec.name}.jsonl") if run_dir else None
    sim = stack.enter_context(SimulatorProcess(profile=profile or spec.profile, truth_log=truth, seed=seed))
    return embedded_endpoint(spec.name, sim.url)
