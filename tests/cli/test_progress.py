"""The training progress bar's time left: supervised and semi-supervised steps timed apart."""

from __future__ import annotations

import pytest
from rich.progress import Progress

from salign_cli.cli.progress import SEMI_STEP_COST, PlannedTimeRemaining, StepClock


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


def test_before_any_step_is_timed_there_is_no_estimate():
    assert StepClock(clock=FakeClock()).tick(0, 10) is None


def test_one_phase_is_steps_left_times_the_timed_rate():
    fake = FakeClock()
    estimates = run(StepClock(clock=fake), fake, [2.0, 2.0], total=10)
    assert estimates[-1] == pytest.approx(8 * 2.0)


def test_slow_steps_not_reached_yet_are_estimated_at_the_semi_cost():
    fake = FakeClock()
    # 10 steps, from step 4 on semi-supervised; 4 supervised steps timed at 1 s
    estimates = run(StepClock(slow_from=4, clock=fake), fake, [1.0] * 4, total=10)
    assert estimates[-1] == pytest.approx(6 * 1.0 * SEMI_STEP_COST)
    # a plain rate over the steps done would say 6 s: half the truth at SEMI_STEP_COST = 2
    assert estimates[2] == pytest.approx(2 * 1.0 + 6 * SEMI_STEP_COST)


def test_once_slow_steps_run_their_own_time_replaces_the_guess():
    fake = FakeClock()
    estimates = run(StepClock(slow_from=4, clock=fake), fake, [1.0] * 4 + [3.0] * 2, total=10)
    assert estimates[-1] == pytest.approx(4 * 3.0)


def test_a_resumed_run_inside_the_slow_phase_is_timed_from_its_own_steps():
    fake = FakeClock()
    clock = StepClock(slow_from=4, clock=fake)
    clock.tick(6, 10)
    fake.now += 6.0
    assert clock.tick(8, 10) == pytest.approx(2 * 3.0)


def test_the_column_shows_the_planned_estimate_when_the_task_has_one():
    progress = Progress(PlannedTimeRemaining())
    task = progress.add_task("fine-tuning", total=10, eta_s=3725.0)
    assert progress.columns[0].render(progress.tasks[task]).plain == "1:02:05"
    plain = progress.add_task("slice cache", total=10, eta_s=None)
    assert progress.columns[0].render(progress.tasks[plain]).plain == "-:--:--"
