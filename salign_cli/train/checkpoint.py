"""Training checkpoints: what a run saves so it can continue exactly, and how it is verified.

A checkpoint is ``checkpoints/step-XXXXXXXX.safetensors`` (model tensors under ``model/``,
optimizer tensors under ``optimizer/<i>/<key>``) plus a ``.json`` sidecar holding the step, the
RNG states, the optimizer's non-tensor state, the size and sha256 of the tensors file and
whatever the loop adds (schedule, sampler position, configs). Both are written atomically and
the sidecar last, so a sidecar vouches for a complete file; loading verifies size and hash and
falls back to the previous checkpoint with a warning. No pickles anywhere.

Kept apart from the loop (`salign_cli.train.engine`) because the stages read checkpoints too:
a resumed stage rebuilds its task from the newest sidecar before the loop starts.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from salign_cli.errors import InputError, OptionError
from salign_cli.io.atomic import atomic_path, write_json
from salign_cli.io.hashing import file_sha256
from salign_cli.workspace import CHECKPOINT_DIR

CHECKPOINT_FORMAT = 1


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
    *,
    extra: Mapping[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint ``step`` atomically (tensors first, sidecar last); keep the newest ``keep``.

    ``extra`` (JSON-ready) joins the sidecar: the loop's schedule, sampler position and configs.
    """
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
        "rng": rng_state(),
        "optimizer": optimizer_meta,
        **extra,
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


def resume_meta(
    run_dir: Path, stage: str, notify: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The newest intact checkpoint's sidecar of a ``stage`` run (`latest_checkpoint`).

    Raises `InputError` naming the right command when ``run_dir`` is another stage's run: its
    task would not parse here. The stage is the sidecar's ``task_config["stage"]``; pre-training
    checkpoints written before that key existed are known by their ``scans`` list.
    """
    meta = latest_checkpoint(run_dir, notify).meta
    task_config = meta.get("task_config", {})
    found = task_config.get("stage", "pretrain" if "scans" in task_config else "finetune")
    if found != stage:
        raise OptionError(
            "resume_from",
            f"{run_dir}: a {found} run, not a {stage} run; continue it with "
            f"salign {found} --resume-from {run_dir}",
        )
    return meta


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
