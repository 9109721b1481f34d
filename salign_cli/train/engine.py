"""The one training loop, shared by pre-training and fine-tuning.

A stage describes only what differs in a `TrainingTask`: the module whose ``forward(batch)``
returns a dict of losses (``"loss"`` is optimised; other entries are logged), a dataset whose
sample ``index`` is a pure function of the index (see `salign_cli.data.sampling`), and how many
2D slices one sample holds (for slices/s). `train` does everything else:

- device (``auto|cpu|cuda[:N]|mps``), bf16 autocast on CUDA (fp32 elsewhere), ``channels_last``
  on CUDA, optional ``torch.compile``;
- AdamW or SGD (Nesterov), linear warm-up then cosine decay — the learning rate is a pure
  function of the step, so resuming needs no scheduler object; gradient-norm clipping; a module
  may split its parameters into groups with an ``lr_scale`` (`ParameterGroups`: pre-trained
  layers slower than a new head) and ask to be told after every update (`StepHook`: weight
  averages, mean teachers);
- checkpoints every N steps and at the end: ``checkpoints/step-XXXXXXXX.safetensors`` (model and
  optimizer tensors) + ``.json`` sidecar (step, schedule, RNG states, sampler position, config,
  size and sha256 of the tensors file). Both are written atomically and the sidecar last, so a
  sidecar vouches for a complete file; the newest two are kept; loading verifies size and hash
  and falls back to the previous checkpoint with a warning. No pickles anywhere;
- ``resume=True`` continues exactly: same weights, optimizer moments, step, learning rate, RNG
  and data (the sampler position is the step);
- ``metrics.jsonl``: one JSON line per logged step (loss terms, collapse monitor, lr, slices/s,
  GPU memory);
- Ctrl-C or SIGTERM stops before the next weight update, saves a checkpoint of the steps done and
  raises `TrainingInterrupted` (a second Ctrl-C aborts at once); a non-finite loss stops with
  `NonFiniteLossError` naming the step and keeps the last good checkpoint; GPU out-of-memory
  becomes a `SalignError` suggesting a smaller ``--batch-size``;
- DDP when started by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``): NCCL on CUDA, Gloo
  on the CPU; rank 0 alone writes files; each rank takes its block of every global batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from salign_cli.data.sampling import StepBatchSampler
from salign_cli.device import resolve_device
from salign_cli.errors import InputError, SalignError
from salign_cli.io.atomic import atomic_path, write_json
from salign_cli.io.hashing import file_sha256

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = "checkpoints"
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
            raise InputError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise InputError(f"--lr must be positive, got {self.lr}")
        if self.optimizer not in ("adamw", "sgd"):
            raise InputError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1 or self.log_every < 1:
            raise InputError("--checkpoint-every, keep_checkpoints and log_every must be >= 1")

    @property
    def resolved_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return max(1, round(0.05 * self.steps))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})


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
# device and distributed set-up


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a DDP job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def distributed_from_env() -> DistributedContext:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as set by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext()
    return DistributedContext(
        rank=int(os.environ["RANK"]),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
    )


@contextlib.contextmanager
def distributed_session(context: DistributedContext, device: torch.device) -> Iterator[None]:
    """Initialise the process group for a DDP job (NCCL on CUDA, Gloo otherwise) and tear it down."""
    import torch.distributed as dist

    if not context.active or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=context.rank, world_size=context.world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _all_reduce(
    values: torch.Tensor, op: str, context: DistributedContext, device: torch.device
) -> torch.Tensor:
    """All-reduce a small CPU tensor across processes (on ``device``: NCCL needs CUDA tensors)."""
    if not context.active:
        return values
    import torch.distributed as dist

    on_device = values.to(device)
    dist.all_reduce(on_device, op=getattr(dist.ReduceOp, op))
    return on_device.cpu()


def _any_rank(flag: bool, context: DistributedContext, device: torch.device) -> bool:
    """True when ``flag`` is true on any process (every process must call this together)."""
    if not context.active:
        return flag
    return bool(_all_reduce(torch.tensor([float(flag)]), "MAX", context, device).item())


# ---------------------------------------------------------------------------------------------
# schedule, optimizer, RNG


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


def rng_state() -> dict[str, Any]:
    """Every global RNG state as JSON-ready lists and ints (no pickles)."""
    # the legacy tuple form (name, keys, pos, has_gauss, cached_gaussian)
    numpy_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [
            numpy_state[0],
            numpy_state[1].tolist(),
            int(numpy_state[2]),
            int(numpy_state[3]),
            float(numpy_state[4]),
        ],
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in cuda_states])


# ---------------------------------------------------------------------------------------------
# checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint on disk: its tensors file, its sidecar payload and its step."""

    tensors_path: Path
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def _flatten_state(
    module: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Model and optimizer state → (tensors for safetensors, JSON-ready rest)."""
    tensors = {
        f"model/{name}": value.detach().to("cpu").contiguous().clone()
        for name, value in module.state_dict().items()
    }
    optimizer_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in optimizer_state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": optimizer_state["param_groups"], "state_scalars": scalars}


def _unflatten_optimizer(
    tensors: Mapping[str, torch.Tensor], saved: Mapping[str, Any]
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer/"):
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = value
    for index, entries in saved["state_scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": saved["param_groups"]}


def save_checkpoint(
    run_dir: Path,
    step: int,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    task_config: Mapping[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint ``step`` atomically (tensors first, sidecar last); prune old ones."""
    from safetensors.torch import save_file

    folder = run_dir / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"step-{step:08d}"
    tensors_path = folder / f"{stem}.safetensors"
    tensors, optimizer_meta = _flatten_state(module, optimizer)
    with atomic_path(tensors_path) as temporary:
        save_file(tensors, str(temporary), metadata={"format": "pt"})
    meta = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "tensors_file": tensors_path.name,
        "tensors_size": tensors_path.stat().st_size,
        "tensors_sha256": file_sha256(tensors_path),
        "schedule": {
            "next_lr": learning_rate(min(step, config.steps - 1), config),
            "warmup_steps": config.resolved_warmup_steps,
            "total_steps": config.steps,
        },
        "sampler": {"position": step, "global_batch_size": config.batch_size},
        "rng": rng_state(),
        "optimizer": optimizer_meta,
        "train_config": config.to_dict(),
        "task_config": dict(task_config),
    }
    write_json(folder / f"{stem}.json", meta)
    for old in list_checkpoints(run_dir)[:-keep]:
        for path in (old, old.with_suffix(".safetensors")):
            path.unlink(missing_ok=True)
    return tensors_path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Sidecar files of a run, oldest first (names sort by step)."""
    return sorted((Path(run_dir) / CHECKPOINT_DIR).glob("step-*.json"))


def latest_checkpoint(run_dir: Path, notify: Callable[[str], None] | None = None) -> Checkpoint:
    """The newest checkpoint whose tensors file matches its sidecar's size and sha256.

    A corrupt or incomplete one is reported through ``notify`` and the previous one is tried.
    Raises `InputError` when the run has no usable checkpoint.
    """
    sidecars = list_checkpoints(run_dir)
    if not sidecars:
        raise InputError(f"{run_dir}: no checkpoint to resume from; start a new run instead")
    for sidecar in reversed(sidecars):
        problem = _checkpoint_problem(sidecar)
        if problem is None:
            meta = json.loads(sidecar.read_text())
            return Checkpoint(sidecar.with_name(meta["tensors_file"]), meta)
        if notify:
            notify(
                f"{sidecar.with_suffix('.safetensors')}: {problem}; using the previous checkpoint"
            )
    raise InputError(
        f"{run_dir / CHECKPOINT_DIR}: every checkpoint is corrupt; start a new run instead"
    )


def _checkpoint_problem(sidecar: Path) -> str | None:
    """Why this checkpoint cannot be trusted, or ``None`` when it is intact."""
    try:
        meta = json.loads(sidecar.read_text())
        tensors_path = sidecar.with_name(meta["tensors_file"])
        if meta.get("format") != CHECKPOINT_FORMAT:
            return f"unknown checkpoint format {meta.get('format')!r}"
        if not tensors_path.is_file():
            return "tensors file is missing"
        if tensors_path.stat().st_size != meta["tensors_size"]:
            return "tensors file has the wrong size (truncated?)"
        if file_sha256(tensors_path) != meta["tensors_sha256"]:
            return "tensors file does not match its sha256 (corrupt)"
    except (OSError, ValueError, KeyError) as error:
        return f"unreadable sidecar ({error})"
    return None


def load_checkpoint(
    checkpoint: Checkpoint, module: nn.Module, optimizer: torch.optim.Optimizer | None
) -> None:
    """Load weights (and optimizer state) from a verified checkpoint and restore the RNG states."""
    from safetensors.torch import load_file

    tensors = load_file(str(checkpoint.tensors_path))
    module.load_state_dict(
        {name[len("model/") :]: t for name, t in tensors.items() if name.startswith("model/")}
    )
    if optimizer is not None:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, checkpoint.meta["optimizer"]))
    set_rng_state(checkpoint.meta["rng"])


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
    channels_last = device.type == "cuda"
    module.to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks it
    optimizer = build_optimizer(module, config)

    start_step, last_checkpoint = 0, None
    if resume:
        checkpoint = latest_checkpoint(run_dir, reporter.on_message)
        load_checkpoint(checkpoint, module, optimizer)
        start_step, last_checkpoint = checkpoint.step, checkpoint.tensors_path
        if context.is_main:
            _prune_metrics(run_dir / METRICS_FILE, start_step)

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
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
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
            run_dir, at_step, module, optimizer, config, task_config, config.keep_checkpoints
        )

    module.train()
    with _StopRequest() as stop:
        for batch in loader:
            if _any_rank(stop.requested, context, device):
                last_checkpoint = checkpoint_now(step) or last_checkpoint
                raise TrainingInterrupted(
                    f"interrupted after step {step}/{config.steps}; checkpoint saved in "
                    f"{run_dir / CHECKPOINT_DIR}; continue with --resume {run_dir}"
                )
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            with autocast:
                outputs = forward(_to_device(batch, device, channels_last))
            loss = outputs["loss"]
            loss_value = _as_float(loss)
            if _any_rank(not math.isfinite(loss_value), context, device):
                raise _non_finite_error(step, outputs, lr, last_checkpoint)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
            optimizer.step()
            if isinstance(module, StepHook):
                module.after_step()
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
    values = _all_reduce(values, "SUM", context, device) / context.world_size
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
