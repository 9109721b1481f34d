"""salign's typed Python API: the functions the CLI calls, for scripts and notebooks.

Each name is imported from its stage module on first use, so ``import salign_cli.api`` is cheap
and importing one stage does not pull in the others (or torch, for the torch-free ones).

>>> from salign_cli import api
>>> result = api.index_folders([Path("scans")])                      # doctest: +SKIP
>>> run = api.pretrain([Path("scans")], workspace="ws")              # doctest: +SKIP
>>> tuned = api.finetune(workspace="ws", options=api.FinetuneOptions(labels=5))  # doctest: +SKIP
>>> api.segment(["new.nii.gz"], model=str(tuned.bundle_dir))         # doctest: +SKIP
>>> mask = api.segment(nib.load("t1.nii.gz"), model="hippocampus")    # doctest: +SKIP
>>> predictor = api.Predictor.from_bundle("hippocampus")              # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers see the real names (``x as x``: re-exported); at run time
    # each name is imported on first use by __getattr__ below
    from salign_cli.bundles.resolve import open_bundle as open_bundle
    from salign_cli.bundles.store import build_model as build_model
    from salign_cli.bundles.store import load_bundle as load_bundle
    from salign_cli.data.index import index_folders as index_folders
    from salign_cli.data.index import load_index as load_index
    from salign_cli.demo import run_demo as run_demo
    from salign_cli.infer.jobs import SegmentOptions as SegmentOptions
    from salign_cli.infer.memory import segment as segment
    from salign_cli.infer.memory import segment_image as segment_image
    from salign_cli.infer.predictor import Predictor as Predictor
    from salign_cli.io.volume import read_volume as read_volume
    from salign_cli.io.volume import write_labels as write_labels
    from salign_cli.metrics.folders import evaluate_folders as evaluate_folders
    from salign_cli.train.engine import RuntimeOptions as RuntimeOptions
    from salign_cli.train.engine import TrainConfig as TrainConfig
    from salign_cli.train.finetune import finetune as finetune
    from salign_cli.train.finetune_setup import FinetuneOptions as FinetuneOptions
    from salign_cli.train.pretrain import PretrainOptions as PretrainOptions
    from salign_cli.train.pretrain import pretrain as pretrain
    from salign_cli.workspace import Workspace as Workspace

_EXPORTS: dict[str, str] = {
    # index
    "index_folders": "salign_cli.data.index",
    "load_index": "salign_cli.data.index",
    # pre-training and fine-tuning
    "pretrain": "salign_cli.train.pretrain",
    "PretrainOptions": "salign_cli.train.pretrain",
    "finetune": "salign_cli.train.finetune",
    "FinetuneOptions": "salign_cli.train.finetune_setup",
    "TrainConfig": "salign_cli.train.engine",
    "RuntimeOptions": "salign_cli.train.engine",
    # inference and evaluation
    "segment": "salign_cli.infer.memory",  # images in memory, or files like the CLI
    "segment_image": "salign_cli.infer.memory",
    "SegmentOptions": "salign_cli.infer.jobs",
    "Predictor": "salign_cli.infer.predictor",
    "evaluate_folders": "salign_cli.metrics.folders",
    # bundles and the Hub
    "open_bundle": "salign_cli.bundles.resolve",
    "load_bundle": "salign_cli.bundles.store",
    "build_model": "salign_cli.bundles.store",
    # volumes
    "read_volume": "salign_cli.io.volume",
    "write_labels": "salign_cli.io.volume",
    # the demo
    "run_demo": "salign_cli.demo",
    "Workspace": "salign_cli.workspace",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'salign_cli.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
