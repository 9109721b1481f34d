"""What a training run's steps cost on this machine, timed before the run starts.

`salign finetune` prints this estimate before it trains, and its progress bar counts down from
it until the run's own steps are timed (`salign_cli.cli.progress.StepClock`). A run's steps
come in phases of different cost: a semi-supervised run's first steps are supervised, the later
ones also run the teacher over an unlabelled half of the batch, which about doubles a step; a
coarse-to-fine run's first steps see a quarter of the pixels. Every phase is timed
(`salign_cli.train.engine.seconds_per_step`), so the estimate needs no guessed ratio.
"""

from __future__ import annotations

import dataclasses
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
class Phase:
    """Steps ``..until`` (1-based, after the previous phase's) at ``seconds`` each; ``kind``
    names them for the user (``"semi-supervised"``, ``"half-resolution"``; ``""`` for plain
    steps, which only a run's first phase may be)."""

    until: int
    seconds: float
    kind: str = ""


@dataclass(frozen=True)
class StepCosts:
    """A run of ``steps`` steps in ``phases`` of different cost (a semi-supervised run's
    supervised start, a coarse-to-fine run's half-resolution start), starting after step
    ``start_step`` (a resumed run's checkpoint; 0 for a new run).

    >>> StepCosts(10, (Phase(4, 1.0), Phase(10, 2.0, "semi-supervised"))).seconds_left(0)
    16.0
    """

    steps: int
    phases: tuple[Phase, ...]
    start_step: int = 0

    @classmethod
    def one_phase(cls, steps: int, seconds: float, start_step: int = 0) -> StepCosts:
        return cls(steps, (Phase(steps, seconds),), start_step)

    def phase_of(self, step: int) -> int:
        """The index of the phase step ``step`` (1-based) belongs to (the last beyond them)."""
        for index, phase in enumerate(self.phases):
            if step <= phase.until:
                return index
        return len(self.phases) - 1

    def steps_left(self, done: int, total: int | None = None) -> list[int]:
        """Per phase, how many of its steps come after ``done`` (of ``total``, default
        ``steps``)."""
        total = self.steps if total is None else total
        left, begin = [], 0
        for index, phase in enumerate(self.phases):
            # the last phase runs to the end, however many steps the loop was given
            end = total if index == len(self.phases) - 1 else min(phase.until, total)
            left.append(max(end - max(begin, done), 0))
            begin = max(begin, end)
        return left

    def seconds_left(self, done: int) -> float:
        """Seconds to run the steps after ``done``."""
        counts = self.steps_left(done)
        return sum(n * phase.seconds for n, phase in zip(counts, self.phases, strict=True))

    def describe(self) -> str:
        """One line for the user, e.g. ``about 5 min 30 s of training: 200 steps at 0.19 s,
        then 800 semi-supervised at 0.37 s (timed on this machine)``."""
        parts: list[str] = []
        counts = self.steps_left(self.start_step)
        for n, phase in zip(counts, self.phases, strict=True):
            if n == 0:
                continue
            if parts:
                parts.append(f"then {n} {phase.kind} at {phase.seconds:.2f} s")
            else:
                kind = f"{phase.kind} " if phase.kind else ""
                parts.append(f"{n} {kind}steps at {phase.seconds:.2f} s")
        left = "left" if self.start_step else "of training"
        return (
            f"about {format_duration(self.seconds_left(self.start_step))} {left}: "
            f"{', '.join(parts)} (timed on this machine)"
        )

    def to_dict(self) -> dict[str, Any]:
        """The record ``report.json`` keeps: the estimate beside the run's ``elapsed_s``."""
        return {
            "steps": self.steps,
            "phases": [dataclasses.asdict(phase) for phase in self.phases],
            "start_step": self.start_step,
            "estimated_s": self.seconds_left(self.start_step),
        }
