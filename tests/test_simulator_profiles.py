"""Simulator profiles: shipped files validate, errors name file and field, draws are seeded."""

from __future__ import annotations

import random
import statistics

import pytest

from harness.simulator.profiles import (PROFILE_DIR, Dist, ProfileError, deep_merge, load_profile,
                                        profile_from_dict, rng_for)


@pytest.mark.parametrize("name", ["ideal", "realistic", "degraded", "chaos"])
def test_shipped_profiles_load(name):
    p = load_profile(name)
    assert p.name == name and p.source.endswith(f"{name}.yaml")
    assert p.first_audio_delay_ms.typical > 0 and p.audio_pace.typical > 0


def test_ideal_is_fixed_and_fault_free_chaos_is_not():
    ideal, chaos = load_profile("ideal"), load_profile("chaos")
    assert ideal.first_audio_delay_ms == Dist("fixed", value=200.0, min=0.0)
    assert all(getattr(ideal.faults, f) == 0 for f in ("error_mid_turn", "stall_response", "handshake_429"))
    assert chaos.faults.error_mid_turn > 0 and chaos.faults.handshake_429 > 0


def test_realistic_median_first_audio_is_about_600ms():
    p = load_profile("realistic")
    rng = random.Random(1)
    xs = [p.first_audio_delay_ms.sample(rng) for _ in range(4000)]
    assert 550 < statistics.median(xs) < 650 and min(xs) >= 150


@pytest.mark.parametrize("raw, where", [
    ({"first_audio_delay_ms": {"dist": "gamma"}}, "first_audio_delay_ms.dist"),
    ({"first_audio_delay_ms": {"dist": "normal", "mean": 5}}, "first_audio_delay_ms.sd"),
    ({"audio_pace": "fast"}, "audio_pace"),
    ({"faults": {"stall_response": 1.5}}, "faults.stall_response"),
    ({"faults": {"teleport": 0.1}}, "faults.teleport"),
    ({"auth": {"api_keys": "k"}}, "auth.api_keys"),
    ({"colour": 1}, "colour"),
])
def test_errors_name_the_file_and_the_field(raw, where):
    with pytest.raises(ProfileError) as exc:
        profile_from_dict(raw, "my.yaml")
    assert str(exc.value).startswith(f"my.yaml: {where}:"), exc.value


def test_missing_profile_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ProfileError, match="ideal"):
        load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("faults: [1, 2]\n")
    with pytest.raises(ProfileError, match=f"{bad}: faults"):
        load_profile(str(bad))


def test_overrides_nested_and_dotted():
    p = load_profile("ideal", {"faults": {"stall_response": 1.0}, "auth.required": True,
                               "first_audio_delay_ms": {"dist": "fixed", "value": 50}})
    assert p.faults.stall_response == 1.0 and p.auth.required is True
    assert p.first_audio_delay_ms.value == 50
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a.b": 5}) == {"a": {"b": 5, "c": 2}}


def test_fault_draws_are_deterministic_and_rate_one_always_fires():
    p = load_profile("ideal", {"faults": {"error_mid_turn": 0.3, "stall_response": 1.0}})
    a = [p.fault_hits("error_mid_turn", s, t) for s in range(20) for t in range(5)]
    b = [p.fault_hits("error_mid_turn", s, t) for s in range(20) for t in range(5)]
    assert a == b and 10 < sum(a) < 50
    assert all(p.fault_hits("stall_response", s, 0) for s in range(10))
    assert not any(p.fault_hits("handshake_429", s) for s in range(10))
    assert rng_for(1, 2, 3, "x").random() == rng_for(1, 2, 3, "x").random() != rng_for(1, 2, 4, "x").random()


def test_dist_clamps():
    d = Dist("normal", mean=0, sd=100, min=-5, max=5)
    rng = random.Random(0)
    assert all(-5 <= d.sample(rng) <= 5 for _ in range(100))
    assert PROFILE_DIR.is_dir()
