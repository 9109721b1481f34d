"""A tiny SAL pre-training task for the engine tests; also run as a script by `torchrun` (DDP test).

``python -m torch.distributed.run --nproc-per-node 2 tiny_training.py RUN_DIR`` trains the same
task as `make_tiny_task` for `STEPS` steps in RUN_DIR (instance norm, so per-process batches
reproduce the statistics of one process on the whole batch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from salign_cli.data.sampling import PairAugmentConfig, SlicePairDataset
from salign_cli.train.engine import RuntimeOptions, TrainConfig, train
from salign_cli.train.pretrain import (
    PretrainObjective,
    PretrainOptions,
    PretrainTask,
    build_network,
)

STEPS, BATCH = 2, 4


def make_tiny_task(norm: str = "batch", init_seed: int = 0) -> PretrainTask:
    """Width-4, depth-2 U-Net on 16² crops of two random 6-slice volumes (data seed 0)."""
    rng = np.random.default_rng(0)
    volumes = [rng.normal(size=(6, 20, 18)).astype(np.float16) for _ in range(2)]
    options = PretrainOptions(
        width=4, depth=2, feature_level="1/2", embedding_dim=8, size=16, norm=norm
    )
    network = build_network(options, init_seed)
    dataset = SlicePairDataset(volumes, augment=PairAugmentConfig(size=16), seed=0)
    return PretrainTask(module=PretrainObjective(network, options), dataset=dataset)


def train_tiny(run_dir: Path, norm: str = "instance") -> None:
    config = TrainConfig(steps=STEPS, batch_size=BATCH, log_every=1, checkpoint_every=STEPS)
    train(make_tiny_task(norm), config, run_dir, runtime=RuntimeOptions(device="cpu"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    train_tiny(Path(sys.argv[1]))
