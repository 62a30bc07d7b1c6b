"""Load shapes: the same plans drive Locust's LoadTestShape and the engine runner."""

from __future__ import annotations

from types import SimpleNamespace

from harness.report.check import CheckResult, parse_threshold
from harness.scenario import LoadSpec, ShapeSpec
from harness.shapes import make_plan, peak_users


def load(kind="flat", **params):
    return LoadSpec(users=10, spawn_rate=5, duration_s=60, stop_timeout_s=10, shape=ShapeSpec(kind, params))


def users(plan, times, evaluate=None):
    return [(plan.tick(t, evaluate) or (None,))[0] for t in times]


def test_flat_then_drain_longer_than_stop_timeout_plus_report_interval():
    plan = make_plan(load())
    assert plan.drain_s > 10 + 3
    assert users(plan, [0, 30, 59.9]) == [10, 10, 10]
    assert users(plan, [60, 60 + plan.drain_s - 0.1]) == [0, 0]
    assert plan.tick(60 + plan.drain_s) is None


def test_cli_and_locust_flags_win_over_the_scenario():
    plan = make_plan(load(), users=3, spawn_rate=1, duration_s=20)
    assert plan.tick(0) == (3, 1) and plan.tick(20) == (0, 1.0)


def test_step_spike_soak():
    step = make_plan(load("step", start_users=2, step_users=3, step_every="10s", max_users=9))
    assert users(step, [0, 10, 20, 30, 50]) == [2, 5, 8, 9, 9]
    spike = make_plan(load("spike", base_users=2, spike_users=20, spike_at="20s", spike_for="5s"))
    assert users(spike, [0, 19, 20, 24.9, 25]) == [2, 2, 20, 20, 2]
    soak = make_plan(load("soak", users=40, ramp="20s"))
    assert users(soak, [0, 10, 20, 59]) == [1, 21, 40, 40]
    assert peak_users(step) == 9 and peak_users(spike) == 20 and peak_users(soak) == 40


def test_breakpoint_stops_at_the_first_step_that_breaks_a_condition():
    hold = ["first_audio_ms.p95 <= 1500"]
    plan = make_plan(load("breakpoint", start_users=10, step_users=10, step_every="10s", max_users=100, hold=hold))
    judged = []

    def evaluate(since_s):
        judged.append(since_s)
        p95 = 1000 if since_s < 20 else 1800  # the step at 30 users is too slow
        return [CheckResult(parse_threshold(hold[0]), "t", p95, p95 <= 1500, "")]

    seq = users(plan, [0, 5, 10, 15, 20, 25, 30], evaluate)
    assert seq[:6] == [10, 10, 20, 20, 30, 30]
    assert seq[6] == 0  # breached: drain starts
    assert plan.breakpoint["users"] == 30 and "first_audio_ms.p95" in plan.breakpoint["breached"][0]
    assert judged == [0.0, 10.0, 20.0]
    assert plan.tick(30 + plan.drain_s + 0.1, evaluate) is None


def test_invalid_shape_parameters_are_named():
    from harness.shapes import validate_shape

    problems = validate_shape(SimpleNamespace(type="step", params={"step_users": "many", "jump": 1}), "load.shape")
    assert ("load.shape.step_users", "expected an integer between 0 and 20000, got 'many'") in problems
    assert any(p[0] == "load.shape.jump" and "unknown parameter" in p[1] for p in problems)


def _turn(t: float, first_audio: float, vad: float, complete: bool = True) -> dict:
    from harness.records import TurnRecord

    rec = TurnRecord(target="t", scenario="s", t_speech_end=t, first_audio_ms=first_audio, vad_ms=vad,
                     complete=complete, reason="complete" if complete else "no_response", valid=True)
    return rec.to_dict()


def test_step_window_judges_each_step_on_its_own_whole_records():
    from harness.shapes import StepWindow

    hold = ["vad_ms.p95 <= 700", "completeness >= 0.9"]  # not only first audio: any `check` threshold
    plan = make_plan(load("breakpoint", start_users=10, step_users=10, step_every="10s", max_users=100, hold=hold))
    win = StepWindow(plan, t0_wall=1000.0)
    for i in range(20):  # step 1 (0-10 s): fine
        win.add(_turn(1000.5 + i * 0.4, 900, 600))
    for i in range(20):  # step 2 (10-20 s): VAD slow, one turn in ten fails
        win.add(_turn(1010.5 + i * 0.4, 900, 850, complete=i % 10 != 0))
    both = win(0.0)  # from 0 s on: both steps are in the window (2 of 40 turns failed)
    assert [r.passed for r in both] == [False, True] and both[1].actual == 0.95
    step2 = win(10.0)
    assert {r.threshold.expr: r.passed for r in step2} == {"vad_ms.p95": False, "completeness": True}
    assert step2[0].actual == 850 and len(win._rows) == 20  # step 1's records were dropped
    win.add(_turn(1005.0, 900, 600))  # a late record from a step already judged is not kept
    assert len(win._rows) == 20


def test_step_window_keeps_nothing_for_other_shapes():
    from harness.shapes import StepWindow

    win = StepWindow(make_plan(load("soak", users=40, ramp="20s")), t0_wall=0.0)
    for i in range(100):
        win.add(_turn(float(i), 900, 600))
    assert win._rows == []


def test_users_flag_rescales_a_shape_to_its_peak_instead_of_being_ignored():
    soak = make_plan(load("soak", users=7, ramp="6s"), users=3)
    assert max(users(soak, range(0, 60))) == 3 == peak_users(soak)
    assert users(soak, [0, 6, 59]) == [1, 3, 3]
    step = make_plan(load("step", start_users=2, step_users=3, step_every="10s", max_users=9), users=18)
    assert users(step, [0, 10, 20, 30]) == [4, 10, 16, 18] and peak_users(step) == 18
    spike = make_plan(load("spike", base_users=2, spike_users=20, spike_at="20s", spike_for="5s"), users=5)
    assert users(spike, [0, 20]) == [1, 5]
    assert make_plan(load("soak", users=7, ramp="6s")).tick(59) == (7, 5)  # no flag: the scenario's shape
