"""Rich progress for the training stages: slice cache, optimiser steps and validation.

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


class TrainingProgress:
    """A Rich progress display; ``quiet`` (or a non-terminal stderr) turns the bars off."""

    def __init__(self, quiet: bool = False) -> None:
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
        """What the stage will run (profile, steps, batch); the step bar then shows time left."""
        if self.enabled:
            err_console.print(f"[bold]{self.stage}[/]: {description}", soft_wrap=True)

    def on_message(self, message: str) -> None:
        err_console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)
