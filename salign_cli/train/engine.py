"""The one training loop, shared by pre-training and fine-tuning.

A stage describes only what differs in a `TrainingTask`: the module whose ``forward(batch)``
returns a dict of losses (``"loss"`` is optimised; other entries are logged), a dataset whose
sample ``index`` is a pure function of the index (see `salign_cli.data.sampling`), and how many
2D slices one sample holds (for slices/s). `train` does everything else:

- device (``auto|cpu|cuda[:N]|mps``), bf16 autocast on CUDA (fp32 elsewhere), ``channels_last``
  on CUDA and CPU (`uses_channels_last`), optional ``torch.compile``;
- AdamW or SGD (Nesterov), linear warm-up then cosine decay — the learning rate is a pure
  function of the step, so resuming needs no scheduler object; gradient-norm clipping; a module
  may split its parameters into groups with an ``lr_scale`` (`ParameterGroups`: pre-trained
  layers slower than a new head) and ask to be told after every update (`StepHook`: weight
  averages, mean teachers);
- checkpoints every N steps and at the end (the newest two are kept; format and verification
  in `salign_cli.train.checkpoint`), with the schedule, sampler position and configs;
- ``resume=True`` continues exactly: same weights, optimizer moments, step, learning rate, RNG
  and data (the sampler position is the step);
- ``metrics.jsonl``: one JSON line per logged step (loss terms, collapse monitor, lr, slices/s,
  GPU memory);
- Ctrl-C or SIGTERM stops before the next weight update, saves a checkpoint of the steps done and
  raises `TrainingInterrupted` (a second Ctrl-C aborts at once); a non-finite loss stops with
  `NonFiniteLossError` naming the step and keeps the last good checkpoint; GPU out-of-memory
  becomes a `SalignError` suggesting a smaller ``--batch-size``;
- DDP when started by ``torchrun`` (`salign_cli.train.distributed`): rank 0 alone writes
  files; each rank takes its block of every global batch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import signal
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from salign_cli.config import known_fields
from salign_cli.data.sampling import StepBatchSampler
from salign_cli.device import resolve_device, uses_channels_last
from salign_cli.errors import InputError, OptionError, SalignError
from salign_cli.io.atomic import atomic_path, remove_stale_partials
from salign_cli.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from salign_cli.train.distributed import (
    DistributedContext,
    all_reduce,
    any_rank,
    distributed_from_env,
    distributed_session,
)
from salign_cli.workspace import CHECKPOINT_DIR

METRICS_FILE = "metrics.jsonl"


class TrainingInterrupted(SalignError):
    """Training stopped on Ctrl-C/SIGTERM after saving a checkpoint (exit 130)."""

    exit_code = 130


class NonFiniteLossError(SalignError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ---------------------------------------------------------------------------------------------
# configuration and the task protocol


@dataclass(frozen=True)
class TrainConfig:
    """What determines the result of training (stored in every checkpoint; resume reuses it).

    ``batch_size`` is the global batch (all processes together). ``warmup_steps`` ``None`` means
    5 % of ``steps``. The learning rate decays by cosine to ``lr * min_lr_ratio`` at the last step.
    """

    steps: int
    batch_size: int
    lr: float = 1e-3
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise OptionError("steps", f"must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise OptionError("batch_size", f"must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise OptionError("lr", f"must be positive, got {self.lr}")
        if self.optimizer not in ("adamw", "sgd"):
            raise InputError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1 or self.log_every < 1:
            raise InputError("checkpoint_every, keep_checkpoints and log_every must be >= 1")

    @property
    def resolved_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return max(1, round(0.05 * self.steps))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> TrainConfig:
        return cls(**known_fields(cls, payload, "training schedule"))


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run, without changing the result: device, compilation, loader workers, output.

    ``workers`` ``None``: data-loader processes by device — none on a CPU (they would take cores
    from the training step), up to 8 on CUDA so sample preparation keeps the GPU busy (samples
    are pure functions of their index, so workers change nothing in the result).
    """

    device: str = "auto"
    compile: bool = False
    workers: int | None = None

    def loader_workers(self, device: torch.device) -> int:
        if self.workers is not None:
            return self.workers
        return min(8, max(0, (os.cpu_count() or 1) - 1)) if device.type == "cuda" else 0


class TrainingTask(Protocol):
    """What a stage supplies to `train`.

    ``module.forward(batch)`` gets a dict of tensors already on the device (a collated batch of
    ``dataset`` samples) and returns a dict with a scalar tensor ``"loss"``; every other entry
    (tensor or float) is logged. All trainable state lives in ``module``. Under DDP ``module`` is
    wrapped as a whole, so every parameter the loss touches must be used inside ``forward``.
    """

    # Read-only members, so a task may hold a narrower module or dataset type (protocol
    # attributes are invariant, properties covariant).
    @property
    def module(self) -> nn.Module: ...

    @property
    def dataset(self) -> Dataset[Any]: ...

    @property
    def slices_per_sample(self) -> int: ...


@runtime_checkable
class ParameterGroups(Protocol):
    """A module that splits its trainable parameters into optimiser groups.

    Each group is ``{"params": [...], "lr_scale": s}``; the group's learning rate is the
    schedule's rate times ``s``.
    """

    def parameter_groups(self) -> list[dict[str, Any]]: ...


@runtime_checkable
class StepHook(Protocol):
    """A module that updates state of its own after every optimiser step (e.g. an EMA)."""

    def after_step(self) -> None: ...


class Reporter(Protocol):
    """Receives progress (every step) and notes such as warnings; the CLI renders them."""

    def on_step(self, step: int, total: int, metrics: Mapping[str, float]) -> None: ...

    def on_message(self, message: str) -> None: ...


class SilentReporter:
    """The default `Reporter`: ignores progress, turns notes into Python warnings."""

    def on_step(self, step: int, total: int, metrics: Mapping[str, float]) -> None:
        pass

    def on_message(self, message: str) -> None:
        import warnings

        warnings.warn(message, stacklevel=2)


@dataclass(frozen=True)
class TrainResult:
    """Summary of a finished `train` call (rank 0's view)."""

    steps: int
    start_step: int
    checkpoint: Path | None
    last_metrics: dict[str, float]
    elapsed_s: float
    slices_per_s: float


# ---------------------------------------------------------------------------------------------
# schedule and optimizer


def learning_rate(step: int, config: TrainConfig) -> float:
    """LR for step ``step`` (0-based): linear warm-up to ``lr``, then cosine to ``lr·min_lr_ratio``.

    Warm-up: ``lr · (step + 1) / warmup``; afterwards with progress ``t`` from 0 to 1 over the
    remaining steps, ``lr · (r + (1 − r) · (1 + cos(π t)) / 2)``.
    """
    warmup = min(config.resolved_warmup_steps, config.steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    decay_steps = max(1, config.steps - warmup - 1)
    progress = min(1.0, (step - warmup) / decay_steps)
    ratio = config.min_lr_ratio
    return config.lr * (ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_optimizer(module: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum, over every trainable parameter of ``module``.

    The module's `ParameterGroups` are used when it has them, else one group with scale 1.
    """
    parameters: list[dict[str, Any]] = (
        module.parameter_groups()
        if isinstance(module, ParameterGroups)
        else [{"params": [p for p in module.parameters() if p.requires_grad], "lr_scale": 1.0}]
    )
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


# ---------------------------------------------------------------------------------------------
# metrics


def _prune_metrics(path: Path, after_step: int) -> None:
    """Drop logged lines beyond ``after_step`` (written after the checkpoint being resumed)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= after_step
    ]
    with atomic_path(path) as temporary:
        temporary.write_text("".join(line + "\n" for line in kept))


def _clear_earlier_run(run_dir: Path, notify: Callable[[str], None]) -> None:
    """A new run in a used folder starts clean: the old metrics would mix with the new ones
    and an old checkpoint with more steps would be what a later ``--resume`` continues."""
    metrics = run_dir / METRICS_FILE
    checkpoints = list_checkpoints(run_dir)
    if not metrics.is_file() and not checkpoints:
        return
    metrics.unlink(missing_ok=True)
    for sidecar in checkpoints:
        sidecar.with_suffix(".safetensors").unlink(missing_ok=True)
        sidecar.unlink()
    notify(
        f"{run_dir}: removed an earlier run's {METRICS_FILE} and {len(checkpoints)} "
        "checkpoint(s) before starting a new run here"
    )


def _as_float(value: torch.Tensor | float) -> float:
    return float(value.detach().float().item()) if isinstance(value, torch.Tensor) else float(value)


# ---------------------------------------------------------------------------------------------
# the loop


class _StopRequest:
    """First SIGINT/SIGTERM asks the loop to stop after the current step; a second aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopRequest:
        # Signal handlers can only be installed from the main thread.
        with contextlib.suppress(ValueError):
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _to_device(
    batch: Mapping[str, Any], device: torch.device, channels_last: bool
) -> dict[str, Any]:
    moved: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, Mapping):
            value = _to_device(value, device, channels_last)
        elif isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.ndim == 4 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last)
        moved[key] = value
    return moved


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; fp32 elsewhere (CPU bf16 without bf16 units is ~10x slower)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _update_weights(
    loss: torch.Tensor, module: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig
) -> None:
    """One update from ``loss``: backward, gradient clipping, optimiser step, step hook."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
    optimizer.step()
    if isinstance(module, StepHook):
        module.after_step()


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def train(
    task: TrainingTask,
    config: TrainConfig,
    run_dir: Path,
    *,
    task_config: Mapping[str, Any] | None = None,
    runtime: RuntimeOptions | None = None,
    resume: bool = False,
    reporter: Reporter | None = None,
) -> TrainResult:
    """Train ``task.module`` for ``config.steps`` steps, writing checkpoints/metrics into ``run_dir``.

    With ``resume`` the newest intact checkpoint in ``run_dir`` is loaded first and training
    continues from its step. ``task_config`` (JSON-ready) is stored in every checkpoint so the
    stage can rebuild its task on resume. The module is left on the training device, trained.

    Example::

        result = train(task, TrainConfig(steps=300, batch_size=32), run_dir)
    """
    runtime = runtime or RuntimeOptions()
    reporter = reporter or SilentReporter()
    context = distributed_from_env()
    device = resolve_device(runtime.device, context.local_rank)
    run_dir = Path(run_dir)
    with distributed_session(context, device):
        try:
            return _train(
                task,
                config,
                run_dir,
                dict(task_config or {}),
                runtime,
                resume,
                reporter,
                context,
                device,
            )
        except (RuntimeError, torch.OutOfMemoryError) as error:
            if device.type != "cuda" or not _is_out_of_memory(error):
                raise
            per_process = config.batch_size // context.world_size
            raise SalignError(
                f"GPU out of memory with {per_process} samples per GPU; lower --batch-size "
                f"(now {config.batch_size})"
            ) from None


def _train(
    task: TrainingTask,
    config: TrainConfig,
    run_dir: Path,
    task_config: dict[str, Any],
    runtime: RuntimeOptions,
    resume: bool,
    reporter: Reporter,
    context: DistributedContext,
    device: torch.device,
) -> TrainResult:
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    module = task.module
    channels_last = uses_channels_last(device)
    module.to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks it
    optimizer = build_optimizer(module, config)

    start_step, last_checkpoint = 0, None
    if context.is_main:
        for folder in (run_dir, run_dir / CHECKPOINT_DIR):
            remove_stale_partials(folder)  # a run killed with -9 mid-write leaves its temporary
    if resume:
        checkpoint = latest_checkpoint(run_dir, reporter.on_message)
        load_checkpoint(checkpoint, module, optimizer)
        start_step, last_checkpoint = checkpoint.step, checkpoint.tensors_path
        if context.is_main:
            _prune_metrics(run_dir / METRICS_FILE, start_step)
    elif context.is_main:
        _clear_earlier_run(run_dir, reporter.on_message)

    forward: Callable[..., Any] = module
    if context.active:
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":
            forward = nn.SyncBatchNorm.convert_sync_batchnorm(module)  # type: ignore[no-untyped-call]
        # Stages use only part of the network (pre-training stops the decoder early).
        forward = DistributedDataParallel(
            forward,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    if runtime.compile:
        forward = torch.compile(forward)

    sampler = StepBatchSampler(
        config.batch_size,
        config.steps,
        start_step=start_step,
        rank=context.rank,
        world_size=context.world_size,
    )
    loader = DataLoader(
        task.dataset,
        batch_sampler=sampler,
        num_workers=runtime.loader_workers(device),
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    autocast = _autocast(device)
    metrics_path = run_dir / METRICS_FILE
    slices_per_step = config.batch_size * task.slices_per_sample
    last_metrics: dict[str, float] = {}
    step = start_step
    started = window_start = time.perf_counter()
    window_steps = 0

    def checkpoint_now(at_step: int) -> Path | None:
        if not context.is_main:
            return None
        return save_checkpoint(
            run_dir,
            at_step,
            module,
            optimizer,
            extra=_checkpoint_extra(at_step, config, task_config),
            keep=config.keep_checkpoints,
        )

    module.train()
    with _StopRequest() as stop:
        for batch in loader:
            if any_rank(stop.requested, context, device):
                last_checkpoint = checkpoint_now(step) or last_checkpoint
                raise TrainingInterrupted(
                    f"interrupted after step {step}/{config.steps}; checkpoint saved in "
                    f"{run_dir / CHECKPOINT_DIR}; continue with --resume-from {run_dir}"
                )
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            with autocast:
                outputs = forward(_to_device(batch, device, channels_last))
            loss = outputs["loss"]
            loss_value = _as_float(loss)
            if any_rank(not math.isfinite(loss_value), context, device):
                raise _non_finite_error(step, outputs, lr, last_checkpoint)
            _update_weights(loss, module, optimizer, config)
            step += 1
            window_steps += 1

            if step % config.log_every == 0 or step == config.steps:
                now = time.perf_counter()
                throughput = slices_per_step * window_steps / (now - window_start)
                last_metrics = _log_metrics(
                    outputs,
                    context,
                    device,
                    step=step,
                    lr=lr,
                    slices_per_s=throughput,
                    elapsed_s=now - started,
                )
                window_start, window_steps = now, 0
                if context.is_main:
                    with metrics_path.open("a") as stream:
                        stream.write(json.dumps(last_metrics) + "\n")
            if context.is_main:
                reporter.on_step(step, config.steps, {**last_metrics, "loss": loss_value})
            if step % config.checkpoint_every == 0 or step == config.steps:
                last_checkpoint = checkpoint_now(step) or last_checkpoint
    elapsed = time.perf_counter() - started
    done = step - start_step
    return TrainResult(
        steps=step,
        start_step=start_step,
        checkpoint=last_checkpoint,
        last_metrics=last_metrics,
        elapsed_s=elapsed,
        slices_per_s=slices_per_step * done / elapsed if elapsed > 0 else 0.0,
    )


def seconds_per_step(
    module: nn.Module,
    dataset: Dataset[Any],
    config: TrainConfig,
    device: torch.device,
    *,
    timed_steps: int = 2,
) -> float:
    """Median wall seconds of one step of `train` on ``device``: loading a batch of samples,
    forward, backward and update, after one untimed step that warms kernels and allocator.

    It trains a deep copy with its own optimiser on the samples of the run's first steps (pure
    functions of their index), so the run it times is unchanged. Why a measurement: a step's
    FLOPs are known, not what this machine's cores (or this GPU) make of them.
    """
    trial = copy.deepcopy(module).to(device)
    channels_last = uses_channels_last(device)
    if channels_last:
        trial.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks it
    optimizer = build_optimizer(trial, config)
    trial.train()
    durations = []
    for attempt in range(timed_steps + 1):
        started = time.perf_counter()
        first = attempt * config.batch_size
        batch = default_collate([dataset[i] for i in range(first, first + config.batch_size)])
        with _autocast(device):
            outputs = trial(_to_device(batch, device, channels_last))
        _update_weights(outputs["loss"], trial, optimizer, config)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations[1:])


def _checkpoint_extra(
    step: int, config: TrainConfig, task_config: Mapping[str, Any]
) -> dict[str, Any]:
    """What the loop adds to a checkpoint's sidecar: schedule, sampler position and configs."""
    return {
        "schedule": {
            "next_lr": learning_rate(min(step, config.steps - 1), config),
            "warmup_steps": config.resolved_warmup_steps,
            "total_steps": config.steps,
        },
        "sampler": {"position": step, "global_batch_size": config.batch_size},
        "train_config": config.to_dict(),
        "task_config": dict(task_config),
    }


def _log_metrics(
    outputs: Mapping[str, torch.Tensor | float],
    context: DistributedContext,
    device: torch.device,
    *,
    step: int,
    lr: float,
    slices_per_s: float,
    elapsed_s: float,
) -> dict[str, float]:
    """Loss terms averaged over processes, plus lr, throughput and GPU memory."""
    names = sorted(outputs)
    values = torch.tensor([_as_float(outputs[name]) for name in names], dtype=torch.float64)
    values = all_reduce(values, "SUM", context, device) / context.world_size
    metrics: dict[str, float] = {"step": step, "lr": lr}
    metrics.update({name: float(v) for name, v in zip(names, values.tolist(), strict=True)})
    metrics["slices_per_s"] = slices_per_s
    metrics["elapsed_s"] = elapsed_s
    if device.type == "cuda":
        metrics["gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return metrics


def _non_finite_error(
    step: int, outputs: Mapping[str, torch.Tensor | float], lr: float, last: Path | None
) -> NonFiniteLossError:
    terms = ", ".join(f"{name}={_as_float(value):.4g}" for name, value in sorted(outputs.items()))
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    return NonFiniteLossError(
        f"loss became non-finite at step {step + 1} ({terms}; lr={lr:.3g}); likely cause: a "
        f"learning rate too high for this batch size (try --lr {lr / 10:.2g}) or non-finite "
        f"input intensities; {kept}"
    )
