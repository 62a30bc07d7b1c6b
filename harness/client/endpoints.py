"""Turn a scenario's targets into connectable endpoints, starting embedded simulators as needed.

Each embedded target gets its own simulator *process* (never the harness's event loop), on a free
loopback port, stopped when the run ends. Real targets get URL and auth from protocol.endpoint and
auth, evaluated at every connect so Entra tokens are refreshed before they expire.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from .. import tlsconf
from ..limits import UNLIMITED, Limits
from ..protocol import endpoint as ep
from ..quota import default_limits, merge_limits, resource_key
from ..scenario import Scenario, TargetSpec
from .options import Endpoint

EMBEDDED_MODEL = "gpt-realtime"


def embedded_endpoint(name: str, base_url: str, ca_file: str | None = None) -> Endpoint:
    """A local simulator; over wss:// the caller trusts only ``ca_file`` (the simulator's own CA)."""
    url = f"{base_url.rstrip('/')}/voice-live/realtime?api-version={ep.DEFAULT_API_VERSION}&model={EMBEDDED_MODEL}"
    ctx = tlsconf.client_context(ca_file) if ca_file else None
    return Endpoint(name=name, url=lambda: url, headers=dict, display=url, open_timeout_s=15.0,
                    resource=f"embedded:{name}", ssl_context=ctx)


def real_endpoint(target: ep.Target) -> Endpoint:
    from ..auth import CredentialProvider

    provider = CredentialProvider(target.auth)

    def url() -> str:
        return ep.build_url(target, secrets=provider.query_secrets())

    display = ep.display_url(ep.build_url(target, secrets={k: "***" for k in ("agent-access-token",)}))
    return Endpoint(name=target.name, url=url, headers=provider.headers, display=display,
                    open_timeout_s=target.open_timeout_s, resource=resource_key(target.endpoint),
                    limits=default_limits(target.endpoint),
                    ssl_context=tlsconf.client_context(target.ca_file) if target.ca_file else None)


def url_endpoint(url: str) -> Endpoint:
    """``--target URL`` from the command line."""
    return real_endpoint(ep.parse_target_url(url))


@contextlib.contextmanager
def open_endpoints(scenario: Scenario, *, run_dir: Path | None = None, override_url: str | None = None,
                   profile: str | None = None, seed: int | None = None,
                   sim_tls: bool = False) -> Iterator[list[Endpoint]]:
    """Yield one Endpoint per target; embedded simulators live exactly as long as the block."""
    if override_url:
        e = url_endpoint(override_url)
        if len(scenario.targets) == 1:  # the scenario's one target is being redirected: keep its limits
            e.limits = merge_limits(e.limits, scenario.targets[0].limits)
        yield [e]
        return
    with contextlib.ExitStack() as stack:
        out: list[Endpoint] = []
        for i, spec in enumerate(scenario.targets):
            out.append(_open(spec, stack, run_dir, profile, None if seed is None else seed + i, sim_tls, scenario))
        yield out


def _open(spec: TargetSpec, stack: contextlib.ExitStack, run_dir: Path | None, profile: str | None,
          seed: int | None, sim_tls: bool = False, scenario: Scenario | None = None) -> Endpoint:
    if not spec.embedded:
        assert spec.target is not None
        e = real_endpoint(spec.target)
        e.limits = merge_limits(e.limits, spec.limits)
        return e
    from ..simulator import SimulatorProcess

    truth = str(run_dir / f"truth-{spec.name}.jsonl") if run_dir else None
    from ..tts.prepare import speech_dirs  # say: lines live in the scenario's speech cache

    sim = stack.enter_context(SimulatorProcess(profile=profile or spec.profile, truth_log=truth, seed=seed,
                                               tls=sim_tls or spec.tls,
                                               fixture_dirs=tuple(speech_dirs(scenario)) if scenario else ()))
    e = embedded_endpoint(spec.name, sim.url, sim.ca_file)
    e.limits = target_limits(spec, profile)
    return e


def resource_limits(scenario: Scenario, profile: str | None = None,
                    override_url: str | None = None) -> dict[str, Limits]:
    """The quotas per resource a run will pace against, without opening anything (the Locust master)."""
    if override_url:
        lim = merge_limits(default_limits(override_url),
                           scenario.targets[0].limits if len(scenario.targets) == 1 else None)
        return {resource_key(override_url): lim}
    out: dict[str, Limits] = {}
    for spec in scenario.targets:
        key = f"embedded:{spec.name}" if spec.embedded else resource_key(spec.target.endpoint)
        out.setdefault(key, target_limits(spec, profile))
    return out


def target_limits(spec: TargetSpec, profile: str | None = None, override_url: str | None = None) -> Limits:
    """The quotas a target's callers plan and pace against: ``target.limits`` over the defaults (S0 for
    Azure hosts, the simulator profile's own quotas for embedded targets, none otherwise)."""
    if override_url:
        return default_limits(override_url)
    if not spec.embedded:
        assert spec.target is not None
        return merge_limits(default_limits(spec.target.endpoint), spec.limits)
    return merge_limits(profile_limits(profile or spec.profile), spec.limits)


def profile_limits(profile: str) -> Limits:
    """The quotas an embedded simulator profile enforces (none if the profile sets none)."""
    from ..simulator.profiles import ProfileError, load_profile

    try:
        limits = getattr(load_profile(profile), "quotas", None)
    except (ProfileError, OSError):
        return UNLIMITED
    return limits if isinstance(limits, Limits) else UNLIMITED
