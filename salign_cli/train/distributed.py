"""Distributed data parallel (DDP) plumbing: which process this is, the process group, the
collectives the loop and the stages need, and the launcher that starts one process per GPU.

A DDP job is ``torchrun`` (``python -m torch.distributed.run``) starting N copies of the same
``salign`` command; each reads its place from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``. Rank 0
alone writes files (index, cache, run folder, checkpoints); the others wait for it where they
need its results (`on_main_first`, `shared_run_dir`). Without torchrun everything here is a
no-op for one process, so single-process code paths need no special case.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from salign_cli.workspace import Workspace

T = TypeVar("T")


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
        # Tear down together: a rank that destroys its group and exits while a peer is still
        # busy (rank 0 writing the last checkpoint) can abort in Gloo's teardown ("terminate
        # called without an active exception"; seen under CPU load in CI).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def all_reduce(
    values: torch.Tensor, op: str, context: DistributedContext, device: torch.device
) -> torch.Tensor:
    """All-reduce a small CPU tensor across processes (on ``device``: NCCL needs CUDA tensors)."""
    if not context.active:
        return values
    import torch.distributed as dist

    on_device = values.to(device)
    dist.all_reduce(on_device, op=getattr(dist.ReduceOp, op))
    return on_device.cpu()


def gather_batch(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (batch first) from every process, concatenated in rank order; gradients flow
    back to each process's own part.

    A loss that compares the samples of a batch with each other (the contrastive GP, PCL) must
    see the whole global batch: on its local share each process would contrast against half the
    negatives and train a different objective than one process does. Every process then computes
    the same global loss; the all-gather's backward sums its gradient over processes (W times
    one process's) and DDP's averaging divides by W again, so training matches one process. A
    no-op outside an initialised process group.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor))  # type: ignore[no-untyped-call]  # untyped in torch


def any_rank(flag: bool, context: DistributedContext, device: torch.device) -> bool:
    """True when ``flag`` is true on any process (every process must call this together)."""
    if not context.active:
        return flag
    return bool(all_reduce(torch.tensor([float(flag)]), "MAX", context, device).item())


def on_main_first(context: DistributedContext, work: Callable[[], T]) -> T:
    """Run ``work`` on rank 0 first (it may write the index/cache), then on the other ranks."""
    if not context.active:
        return work()
    import torch.distributed as dist

    if not context.is_main:
        dist.barrier()
        return work()
    value = work()
    dist.barrier()
    return value


def shared_run_dir(
    workspace: Workspace,
    kind: str,
    run_dir: Path | None,
    context: DistributedContext,
    device: torch.device,
) -> Path:
    """``run_dir`` (created), else a new run folder of ``kind``, made by rank 0 and announced to
    the others (as UTF-8 bytes, so every rank writes into the same folder)."""
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        return Path(run_dir)
    if not context.active:
        return workspace.new_run_dir(kind)
    import torch.distributed as dist

    buffer = torch.zeros(4096, dtype=torch.uint8, device=device)
    if context.is_main:
        encoded = str(workspace.new_run_dir(kind)).encode()
        buffer[: len(encoded)] = torch.tensor(list(encoded), dtype=torch.uint8)
    dist.broadcast(buffer, src=0)
    return Path(bytes(buffer.cpu().tolist()).rstrip(b"\0").decode())


# ---------------------------------------------------------------------------------------------
# the launcher


def torchrun_command(processes: int, arguments: Sequence[str]) -> list[str]:
    """The command that runs ``salign ARGUMENTS`` as ``processes`` DDP processes on this machine.

    ``python -m torch.distributed.run`` rather than a ``torchrun`` executable, so it works
    in any environment where this Python has torch (no PATH lookup).
    """
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "salign_cli",
        *arguments,
    ]


def launch(processes: int, arguments: Sequence[str]) -> int:
    """Run ``salign ARGUMENTS`` as ``processes`` DDP processes and wait; their exit status."""
    return subprocess.run(torchrun_command(processes, arguments), check=False).returncode


def under_torchrun() -> bool:
    """True inside a process that torchrun started (the launcher must not launch again)."""
    return "WORLD_SIZE" in os.environ
