"""What a training run's steps cost on this machine, timed before the run starts.

`salign finetune` prints this estimate before it trains, and its progress bar counts down from
it until the run's own steps are timed (`salign_cli.cli.progress.StepClock`). A
semi-supervised run has two phases: its first steps are supervised, and the later ones also run
the teacher over an unlabelled half of the batch, which about doubles a step; both phases are
timed (`salign_cli.train.engine.seconds_per_step`), so the estimate needs no guessed ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def format_duration(seconds: float) -> str:
    """``"3 min 05 s"``, ``"42 s"`` or ``"1 h 02 min"``: how a person reads a wait.

    >>> format_duration(185.4), format_duration(42.0), format_duration(3725.0)
    ('3 min 05 s', '42 s', '1 h 02 min')
    """
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class StepCosts:
    """A run of ``steps`` steps whose steps ``1..slow_from`` take ``fast_s`` seconds each and
    the rest ``slow_s`` (`one_phase`: all alike), starting after step ``start_step`` (a
    resumed run's checkpoint; 0 for a new run).

    >>> StepCosts(steps=10, fast_s=1.0, slow_from=4, slow_s=2.0).seconds_left(0)
    16.0
    """

    steps: int
    fast_s: float
    slow_from: int
    slow_s: float
    start_step: int = 0

    @classmethod
    def one_phase(cls, steps: int, seconds: float, start_step: int = 0) -> StepCosts:
        return cls(steps, seconds, slow_from=steps, slow_s=seconds, start_step=start_step)

    def seconds_left(self, done: int) -> float:
        """Seconds to run the steps after ``done``."""
        boundary = min(max(self.slow_from, done), self.steps)
        return max(boundary - done, 0) * self.fast_s + (self.steps - boundary) * self.slow_s

    def describe(self) -> str:
        """One line for the user, e.g. ``about 5 min 30 s of training: 200 steps at 0.19 s,
        then 800 semi-supervised at 0.37 s (timed on this machine)``."""
        boundary = min(max(self.slow_from, self.start_step), self.steps)
        fast, slow = boundary - self.start_step, self.steps - boundary
        if slow == 0:
            parts = f"{self.steps} steps at {self.fast_s:.2f} s"
        elif fast == 0:
            parts = f"{slow} semi-supervised steps at {self.slow_s:.2f} s"
        else:
            parts = (
                f"{fast} steps at {self.fast_s:.2f} s, then {slow} semi-supervised "
                f"at {self.slow_s:.2f} s"
            )
        left = "left" if self.start_step else "of training"
        return (
            f"about {format_duration(self.seconds_left(self.start_step))} {left}: {parts} "
            "(timed on this machine)"
        )

    def to_dict(self) -> dict[str, Any]:
        """The record ``report.json`` keeps: the estimate beside the run's ``elapsed_s``."""
        return {
            "steps": self.steps,
            "fast_s": self.fast_s,
            "slow_from": self.slow_from,
            "slow_s": self.slow_s,
            "start_step": self.start_step,
            "estimated_s": self.seconds_left(self.start_step),
        }
