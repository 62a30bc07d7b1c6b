"""Every fixture's VAD decisions equal those recorded on main before the VAD was optimised (issue 15)."""

from __future__ import annotations

import json

import pytest

from harness.fixtures import load_manifest
import vad_golden as G

GOLDEN = json.loads(G.GOLDEN.read_text())


def test_golden_covers_every_fixture() -> None:
    assert sorted(GOLDEN) == sorted(load_manifest())


@pytest.mark.parametrize("fid", sorted(GOLDEN))
def test_vad_decisions_unchanged(fid: str) -> None:
    want = GOLDEN[fid]
    assert G.offline(fid) == want["offline"]
    assert G.streaming(fid) == want["streaming"]
    for fmt in G.FORMATS:
        for batch in G.BATCHES_MS:
            assert G.simulator(fid, fmt, batch) == want[f"sim/{fmt}/{batch}"], (fmt, batch)
