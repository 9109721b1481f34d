"""Rich progress for the training stages (slice cache, optimiser steps and validation) and for
the slices inside one long scan during `segment`.

One reporter serves `pretrain`, `finetune` and `demo`; the stage modules only call
``on_cache``, ``on_step``, ``on_validation`` and ``on_message``. Bars are drawn on stderr and
only on a terminal, so piped output and logs stay clean.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from salign_cli.cli.common import err_console
from salign_cli.train.step_costs import StepCosts

# A scan with at least this many slices gets its own bar in `segment`: on a CPU a 512x512 slice
# takes about a second, so 64 slices are a minute, while a hippocampus crop (about 40 small
# slices) is done before a bar could help.
LONG_SCAN_SLICES = 64


class StepClock:
    """Time left in a run, from the step costs timed before it started (`StepCosts`), then
    from its own steps.

    A run's phases are timed apart (a semi-supervised run's supervised start is about twice as
    fast as the rest, a coarse-to-fine run's half-resolution start about three times). A phase
    that has run is estimated at its own rate; one not reached yet at its timed cost, scaled by
    how the phase that ran last compares with its own timing. A plain rate over all steps done
    so far — what a progress bar's own estimate is — under-reads by half while the fast steps
    run. Without costs there is one phase, timed as it runs.
    """

    def __init__(
        self, costs: StepCosts | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.costs = costs
        self.clock = clock
        self._last: tuple[int, float] | None = None
        phases = 1 if costs is None else len(costs.phases)
        self._seconds = [0.0] * phases
        self._steps = [0] * phases

    def _phase(self, step: int) -> int:
        return 0 if self.costs is None else self.costs.phase_of(step)

    def tick(self, step: int, total: int) -> float | None:
        """Record that ``step`` is done; the seconds left to ``total`` (``None``: not timed yet)."""
        now = self.clock()
        if self._last is not None and step > self._last[0]:
            phase = self._phase(step)
            self._seconds[phase] += now - self._last[1]
            self._steps[phase] += step - self._last[0]
        self._last = (step, now)
        rate = {p: self._seconds[p] / n for p, n in enumerate(self._steps) if n}
        if self.costs is None:
            return max(total - step, 0) * rate[0] if rate else None
        timed = [phase.seconds for phase in self.costs.phases]
        # the machine now against its timing: the current phase's, else the last that ran
        latest = self._phase(step) if self._phase(step) in rate else max(rate, default=None)
        scale = 1.0 if latest is None or timed[latest] <= 0 else rate[latest] / timed[latest]
        counts = self.costs.steps_left(step, total)
        return sum(n * rate.get(p, timed[p] * scale) for p, n in enumerate(counts))


class PlannedTimeRemaining(TimeRemainingColumn):
    """Rich's time-remaining column, or the task's own ``eta_s`` field when it has one."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta_s")
        if eta is None or task.finished:
            return super().render(task)
        minutes, seconds = divmod(round(eta), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


class TrainingProgress:
    """A Rich progress display; ``quiet`` (or a non-terminal stderr) turns the bars off."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.enabled = not quiet and err_console.is_terminal
        self.stage = "training"
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            PlannedTimeRemaining(),
            console=err_console,
        )
        self._tasks: dict[str, TaskID] = {}
        self._clock = StepClock()

    def __enter__(self) -> TrainingProgress:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def begin(self, stage: str) -> None:
        """Name the bars of the stage that starts now (e.g. "pre-training", "fine-tuning")."""
        self.stage = stage
        self._clock = StepClock()

    def _update(
        self, name: str, done: int, total: int, detail: str = "", eta_s: float | None = None
    ) -> None:
        if not self.enabled:
            return
        key = f"{self.stage}/{name}"
        if key not in self._tasks:
            self._tasks[key] = self.progress.add_task(name, total=total, detail="", eta_s=None)
        self.progress.update(
            self._tasks[key], completed=done, total=total, detail=detail, eta_s=eta_s
        )

    def on_cache(self, done: int, total: int) -> None:
        self._update("slice cache", done, total)

    def on_step(self, step: int, total: int, metrics: Mapping[str, float]) -> None:
        detail = f"loss {metrics.get('loss', math.nan):.4f}"
        if "feature_std" in metrics:
            detail += f"  spread {metrics['feature_std']:.3f}"
        self._update(self.stage, step, total, detail, self._clock.tick(step, total))

    def on_estimate(self, costs: StepCosts) -> None:
        """What the run's steps cost here, timed before it trains: said once (even when
        stderr is not a terminal; ``quiet`` silences it), then the bar counts down from it."""
        self._clock = StepClock(costs)
        self.on_plan(costs.describe())

    def on_validation(self, done: int, total: int) -> None:
        self._update("validation", done, total)

    def on_plan(self, description: str) -> None:
        """What the stage will run (the plan, with a reason per choice), on stderr even when it
        is not a terminal: a log of a run should say what ran. ``quiet`` silences it."""
        if not self.quiet:
            err_console.print(f"[bold]{self.stage}[/]: {description}", soft_wrap=True)

    def on_message(self, message: str) -> None:
        err_console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


class ScanBar:
    """A bar for the slices of the scan being segmented, with time left; shown only for scans
    of at least ``min_slices`` slices and removed when the scan is done.

    ``update(name, done, total)`` is ``segment``'s ``on_slices`` callback (with the job's name).
    """

    def __init__(self, progress: Progress, min_slices: int = LONG_SCAN_SLICES) -> None:
        self.progress = progress
        self.min_slices = min_slices
        self._task: TaskID | None = None

    def update(self, name: str, done: int, total: int) -> None:
        if total < self.min_slices:
            return
        if self._task is None:
            self._task = self.progress.add_task(f"slices of {name}", total=total)
        self.progress.update(self._task, completed=done, total=total)
        if done >= total:
            self.progress.remove_task(self._task)
            self._task = None
