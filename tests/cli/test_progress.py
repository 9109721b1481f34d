"""The training run's estimate (`StepCosts`) and its progress bar's time left (`StepClock`)."""

from __future__ import annotations

import pytest
from rich.progress import Progress

from salign_cli.cli.progress import PlannedTimeRemaining, StepClock
from salign_cli.train.step_costs import Phase, StepCosts


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(clock: StepClock, fake: FakeClock, seconds_per_step: list[float], total: int):
    """Tick steps 0..n with the given durations; the estimate after each."""
    estimates = [clock.tick(0, total)]
    for step, seconds in enumerate(seconds_per_step, start=1):
        fake.now += seconds
        estimates.append(clock.tick(step, total))
    return estimates


# 10 steps, from step 4 on semi-supervised, timed before the run at 1 s and 2 s a step
COSTS = StepCosts(10, (Phase(4, 1.0), Phase(10, 2.0, "semi-supervised")))
# and coarse-to-fine: 2 half-resolution steps at 0.5 s before them
THREE = StepCosts(
    10, (Phase(2, 0.5, "half-resolution"), Phase(4, 1.0, "full-resolution"), Phase(10, 2.0, "semi"))
)


def test_without_costs_there_is_no_estimate_before_a_step_is_timed():
    assert StepClock(clock=FakeClock()).tick(0, 10) is None


def test_without_costs_time_left_is_steps_left_times_the_timed_rate():
    fake = FakeClock()
    estimates = run(StepClock(clock=fake), fake, [2.0, 2.0], total=10)
    assert estimates[-1] == pytest.approx(8 * 2.0)


def test_before_any_step_the_timed_costs_are_the_estimate():
    assert StepClock(COSTS, clock=FakeClock()).tick(0, 10) == pytest.approx(4 * 1.0 + 6 * 2.0)


def test_slow_steps_not_reached_yet_scale_with_how_the_fast_ones_ran():
    fake = FakeClock()
    # the machine runs 1.5x slower than it was timed (another job started, say)
    estimates = run(StepClock(COSTS, clock=fake), fake, [1.5] * 4, total=10)
    assert estimates[-1] == pytest.approx(6 * 2.0 * 1.5)
    assert estimates[2] == pytest.approx(2 * 1.5 + 6 * 2.0 * 1.5)
    # a plain rate over the steps done would say 6 x 1.5 = 9 s at step 4: half the truth


def test_once_slow_steps_run_their_own_time_replaces_the_timing():
    fake = FakeClock()
    estimates = run(StepClock(COSTS, clock=fake), fake, [1.0] * 4 + [3.0] * 2, total=10)
    assert estimates[-1] == pytest.approx(4 * 3.0)


def test_a_resumed_run_inside_the_slow_phase_is_timed_from_its_own_steps():
    fake = FakeClock()
    clock = StepClock(COSTS, clock=fake)
    assert clock.tick(6, 10) == pytest.approx(4 * 2.0)  # resumed at step 6: the timing
    fake.now += 6.0
    assert clock.tick(8, 10) == pytest.approx(2 * 3.0)


def test_step_costs_add_up_the_steps_left_in_each_phase():
    assert COSTS.seconds_left(0) == pytest.approx(16.0)
    assert COSTS.seconds_left(3) == pytest.approx(1 * 1.0 + 6 * 2.0)
    assert COSTS.seconds_left(7) == pytest.approx(3 * 2.0)
    assert COSTS.seconds_left(10) == 0.0
    assert StepCosts.one_phase(10, 0.5).seconds_left(2) == pytest.approx(4.0)
    assert THREE.seconds_left(0) == pytest.approx(2 * 0.5 + 2 * 1.0 + 6 * 2.0)
    assert THREE.seconds_left(3) == pytest.approx(1 * 1.0 + 6 * 2.0)
    assert THREE.steps_left(1) == [1, 2, 6] and THREE.steps_left(9) == [0, 0, 1]
    assert [THREE.phase_of(step) for step in (1, 2, 3, 4, 5, 10, 11)] == [0, 0, 1, 1, 2, 2, 2]


def test_three_phases_each_run_at_their_own_rate_and_scale_the_ones_to_come():
    fake = FakeClock()
    clock = StepClock(THREE, clock=fake)
    # the half-resolution steps run 2x slower than timed: every later phase is scaled by 2
    estimates = run(clock, fake, [1.0, 1.0], total=10)
    assert estimates[-1] == pytest.approx(2 * 1.0 * 2 + 6 * 2.0 * 2)
    # then the full-resolution ones run as timed: the scale follows the latest phase
    fake.now += 1.0
    assert clock.tick(3, 10) == pytest.approx(1 * 1.0 + 6 * 2.0)


@pytest.mark.parametrize(
    ("costs", "line"),
    [
        (COSTS, "about 16 s of training: 4 steps at 1.00 s, then 6 semi-supervised at 2.00 s"),
        (
            THREE,
            "about 15 s of training: 2 half-resolution steps at 0.50 s, then 2 "
            "full-resolution at 1.00 s, then 6 semi at 2.00 s",
        ),
        (
            StepCosts.one_phase(1000, 0.19),
            "about 3 min 10 s of training: 1000 steps at 0.19 s",
        ),
        (
            StepCosts(10, COSTS.phases, start_step=6),
            "about 8 s left: 4 semi-supervised steps at 2.00 s",
        ),
    ],
)
def test_step_costs_say_what_the_run_will_take(costs: StepCosts, line: str):
    assert costs.describe() == f"{line} (timed on this machine)"
    assert costs.to_dict()["estimated_s"] == pytest.approx(costs.seconds_left(costs.start_step))


def test_the_column_shows_the_planned_estimate_when_the_task_has_one():
    progress = Progress(PlannedTimeRemaining())
    task = progress.add_task("fine-tuning", total=10, eta_s=3725.0)
    assert progress.columns[0].render(progress.tasks[task]).plain == "1:02:05"
    plain = progress.add_task("slice cache", total=10, eta_s=None)
    assert progress.columns[0].render(progress.tasks[plain]).plain == "-:--:--"
