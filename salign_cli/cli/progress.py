"""Rich progress for the training stages (slice cache, optimiser steps and validation) and for
the slices inside one long scan during `segment`.

One reporter serves `pretrain`, `finetune` and `demo`; the stage modules only call
``on_cache``, ``on_step``, ``on_validation`` and ``on_message``. Bars are drawn on stderr and
only on a terminal, so piped output and logs stay clean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from salign_cli.cli.common import err_console

# A scan with at least this many slices gets its own bar in `segment`: on a CPU a 512x512 slice
# takes about a second, so 64 slices are a minute, while a hippocampus crop (about 40 small
# slices) is done before a bar could help.
LONG_SCAN_SLICES = 64


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
            TimeRemainingColumn(),
            console=err_console,
        )
        self._tasks: dict[str, TaskID] = {}

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

    def _update(self, name: str, done: int, total: int, detail: str = "") -> None:
        if not self.enabled:
            return
        key = f"{self.stage}/{name}"
        if key not in self._tasks:
            self._tasks[key] = self.progress.add_task(name, total=total, detail="")
        self.progress.update(self._tasks[key], completed=done, total=total, detail=detail)

    def on_cache(self, done: int, total: int) -> None:
        self._update("slice cache", done, total)

    def on_step(self, step: int, total: int, metrics: Mapping[str, float]) -> None:
        detail = f"loss {metrics.get('loss', math.nan):.4f}"
        if "feature_std" in metrics:
            detail += f"  spread {metrics['feature_std']:.3f}"
        self._update(self.stage, step, total, detail)

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
