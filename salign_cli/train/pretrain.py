"""Self-supervised pre-training (SAL, PCL or none) on unlabelled scans: what differs from fine-tuning.

The stage resolves scans (indexing folders first when needed), fills the slice cache, builds
the network and the objective, hands both to the shared loop (`salign_cli.train.engine.train`)
and writes a bundle of kind ``"pretrained"`` that ``salign finetune`` picks up by default.

Methods (docs/explanation/method.md, "Pre-training" and "Baselines"):

- ``sal`` — L = L_(W)LA + λ·L_GP on pairs of nearby slices. Defaults: window LA (r = 3) on the
  1/4-resolution decoder map, the ``sharp`` collapse-guarded variant (τ = 0.1), symmetric, and
  contrastive GP with λ = 1 (slices at nearby positions attract in the global feature; the
  best probe of the ablation in docs/benchmarks.md; options: ``relative``, ``absolute``,
  ``none``);
- ``pcl`` — the positional contrastive loss alone on the global feature (the PCL baseline);
- ``scratch`` — no training: the untrained, seeded network is written as a bundle, so the
  few-label benchmark treats every method alike.

A run folder ``runs/pretrain-<timestamp>/`` holds ``checkpoints/``, ``metrics.jsonl``,
``report.json`` and ``bundle/``. Everything needed to resume (options, scans, preprocessing)
is stored in each checkpoint's sidecar.

Why a little over 600 lines: the options with their checks, the SAL objective module and the
stage are one method's definition, changed together; the losses themselves live in
`salign_cli.objectives`, the loop in `salign_cli.train.engine`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from salign_cli.config import PRETRAIN_PAIRS, PRETRAIN_STEPS, known_fields
from salign_cli.data.index.paths import folder_key, lies_under
from salign_cli.data.preprocess import (
    ISOTROPY_TOLERANCE,
    PreprocessConfig,
    SliceCache,
    parse_spacing,
)
from salign_cli.data.sampling import PairAugmentConfig, SlicePairDataset
from salign_cli.device import resolve_device
from salign_cli.errors import InputError, OptionError
from salign_cli.io.atomic import write_json
from salign_cli.io.volume import canonical_grid, read_header
from salign_cli.model.heads import SALHeadsConfig, SALNetwork
from salign_cli.model.unet import UNet2D, UNetConfig, feature_levels
from salign_cli.objectives.alignment import (
    collapse_monitor,
    local_alignment_loss,
    window_alignment_loss,
)
from salign_cli.objectives.positional import (
    absolute_position_loss,
    positional_contrastive_loss,
    relative_position_loss,
)
from salign_cli.train.checkpoint import resume_meta
from salign_cli.train.distributed import (
    DistributedContext,
    distributed_from_env,
    distributed_session,
    gather_batch,
    on_main_first,
    shared_run_dir,
)
from salign_cli.train.engine import (
    METRICS_FILE,
    Reporter,
    RuntimeOptions,
    SilentReporter,
    TrainConfig,
    train,
)
from salign_cli.train.plan import PlanBudget, planned_spacing
from salign_cli.train.recipe import profile_for_device, recipe_for
from salign_cli.train.scans import (
    ScanEntry,
    load_cached_slices,
    preprocess_config_for,
    resolve_scans,
)
from salign_cli.workspace import Workspace

Method = Literal["sal", "pcl", "scratch"]
METHODS = ("sal", "pcl", "scratch")
GP_KINDS = ("relative", "absolute", "contrastive", "none")
HEADS_PREFIX = "sal_heads."  # pre-training heads travel in the bundle under this prefix
CPU_WIDTH = 16  # default U-Net width off CUDA: about 2x faster than 32 on two cores


@dataclass(frozen=True)
class PretrainOptions:
    """What to learn and with which network (stored in checkpoints and the bundle's provenance).

    ``window_radius`` 0 selects full LA; ``width`` ``None`` means 32 on CUDA and 16 elsewhere.
    ``pcl_threshold``/``pcl_temperature`` are PCL's t and τ (also used by ``gp="contrastive"``).

    The harder pretext of issue "accuracy 3/3", each piece off by default until measured:
    ``feature_level`` may name several maps joined by ``+`` (``"1/4+1/2"``: LA on each, averaged;
    ``"full"`` pre-trains the whole decoder); ``pair_distance_mm`` gives the pair distance in
    millimetres instead of slices (so 1 mm MR and 5 mm CT pair the same anatomy);
    ``pair_shift`` (pixels), ``pair_rotation_deg`` and ``pair_scale`` move slice j by its own
    small spatial transform, so the matching structure is never at the same pixel;
    ``la_weight`` 0 leaves GP alone (the "GP only" ablation).
    """

    method: Method = "sal"
    size: int = 64
    la_variant: Literal["sharp", "literal"] = "sharp"
    temperature: float = 0.1
    symmetric: bool = True
    window_radius: int = 3
    feature_level: str = "1/4"
    embedding_dim: int = 128
    pair_distance: int = 2
    pair_distance_mm: float | None = None
    pair_shift: int = 0
    pair_rotation_deg: float = 0.0
    pair_scale: float = 0.0
    gp: Literal["relative", "absolute", "contrastive", "none"] = "contrastive"
    gp_weight: float = 1.0
    la_weight: float = 1.0
    pcl_threshold: float = 0.1
    pcl_temperature: float = 0.1
    width: int | None = None
    depth: int = 4
    norm: Literal["batch", "instance"] = "batch"
    spacing: str | float = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise OptionError("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.gp not in GP_KINDS:
            raise OptionError("gp", f"must be one of {', '.join(GP_KINDS)}, got {self.gp!r}")
        if self.la_variant not in ("sharp", "literal"):
            raise OptionError("la_variant", f"must be sharp or literal, got {self.la_variant!r}")
        if self.window_radius < 0:
            raise OptionError(
                "window_radius", f"must be >= 0 (0 = full LA), got {self.window_radius}"
            )
        for level in self.la_levels:
            if level not in feature_levels(self.depth):
                raise OptionError(
                    "feature_level",
                    f"{level!r} is not one of "
                    f"{', '.join(feature_levels(self.depth))} (join several with +)",
                )
        if self.gp_weight < 0 or self.la_weight < 0:
            raise OptionError("gp_weight" if self.gp_weight < 0 else "la_weight", "must be >= 0")
        if self.pair_distance_mm is not None and self.pair_distance_mm <= 0:
            raise OptionError("pair_distance_mm", f"must be positive, got {self.pair_distance_mm}")
        if not 0 <= self.pair_scale < 0.5 or not 0 <= self.pair_rotation_deg <= 45:
            raise InputError("pair scale must lie in [0, 0.5) and pair rotation in [0, 45] degrees")
        if self.width is not None and self.width < 1:
            raise OptionError("width", f"must be positive, got {self.width}")
        parse_spacing(str(self.spacing))

    @property
    def la_levels(self) -> tuple[str, ...]:
        """The maps LA reads: ``feature_level`` split at ``+``, the main level first."""
        return tuple(level.strip() for level in self.feature_level.split("+"))

    def pair_distance_for(self, spacing_mm: tuple[float, float, float]) -> int:
        """Pair distance in slices for a scan: ``pair_distance``, or ``pair_distance_mm`` over
        the scan's slice spacing (rounded, at least 1).

        The slice spacing is the largest voxel size when one stands out (the slice axis is the
        coarsest, `choose_slice_axis`), else the mean (near-isotropic: they agree within 10 %).
        """
        if self.pair_distance_mm is None:
            return self.pair_distance
        largest, smallest = max(spacing_mm), min(spacing_mm)
        slice_mm = largest if largest > ISOTROPY_TOLERANCE * smallest else sum(spacing_mm) / 3
        return max(1, round(self.pair_distance_mm / slice_mm))

    def resolved(self, device: torch.device) -> PretrainOptions:
        """Fill in the device-dependent default width."""
        if self.width is not None:
            return self
        return dataclasses.replace(self, width=32 if device.type == "cuda" else CPU_WIDTH)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> PretrainOptions:
        return cls(**known_fields(cls, payload, "pre-training options"))


@dataclass(frozen=True)
class PretrainSetup:
    """Everything a pre-training run does, decided once (`plan_pretrain_setup`) and stored in
    each checkpoint (`to_task_config`), so a resumed run (`from_checkpoint`) is the same run:
    the options (width resolved for the device), the schedule, the scans and their
    preprocessing, and the bundle it started from (``None``: a seeded network)."""

    options: PretrainOptions
    train_config: TrainConfig
    scans: tuple[ScanEntry, ...]
    preprocess: PreprocessConfig
    base_model: str | None

    def to_task_config(self) -> dict[str, Any]:
        """The JSON-ready record every checkpoint stores (the engine keeps ``train_config``)."""
        return {
            "stage": "pretrain",
            "options": self.options.to_dict(),
            "scans": [dataclasses.asdict(s) for s in self.scans],
            "preprocessing": self.preprocess.to_dict(),
            "base_model": self.base_model,
        }

    @classmethod
    def from_checkpoint(cls, stored: Mapping[str, Any]) -> PretrainSetup:
        """The setup a checkpoint's sidecar recorded (`resume_meta`'s answer)."""
        task_config = stored["task_config"]
        return cls(
            options=PretrainOptions.from_dict(task_config["options"]),
            train_config=TrainConfig.from_dict(stored["train_config"]),
            scans=tuple(ScanEntry.from_dict(s) for s in task_config["scans"]),
            preprocess=PreprocessConfig.from_dict(task_config["preprocessing"]),
            base_model=task_config.get("base_model"),
        )


def plan_pretrain_setup(
    folders: Sequence[Path],
    workspace: Workspace,
    options: PretrainOptions | None,
    train_config: TrainConfig | None,
    base: str | None,
    notify: Callable[[str], None] | None,
    context: DistributedContext,
    device: torch.device,
) -> PretrainSetup:
    """A new run's setup: the scans (indexed by rank 0 first), their preprocessing, and the
    defaults (`PretrainOptions()`, `PRETRAIN_STEPS` steps of `PRETRAIN_PAIRS` pairs) where nothing
    was given."""
    scans = on_main_first(
        context,
        lambda: resolve_scans(
            folders,
            workspace,
            index_first=context.is_main,
            notify=notify if context.is_main else None,
        ),
    )
    resolved = (options or PretrainOptions()).resolved(device)
    return PretrainSetup(
        options=resolved,
        train_config=train_config or TrainConfig(steps=PRETRAIN_STEPS, batch_size=PRETRAIN_PAIRS),
        scans=tuple(scans),
        preprocess=pretraining_preprocess(scans, resolved.spacing, device),
        base_model=base,
    )


def pretraining_preprocess(
    scans: Sequence[ScanEntry], spacing: str | float, device: torch.device
) -> PreprocessConfig:
    """The scans' preprocessing; ``auto`` spacing is what a fine-tune from scratch would plan on
    this device (`planned_spacing`, from the scans' headers), because a fine-tune from the
    bundle keeps the bundle's spacing: on LA 2018 ~1 mm, not the scans' 0.625 mm."""
    config = preprocess_config_for(scans, spacing)
    if str(spacing) != "auto":
        return config
    grids = [canonical_grid(read_header(scan.image_path)) for scan in scans]
    budget = PlanBudget.of(recipe_for(profile_for_device(device.type)))
    return dataclasses.replace(
        config, target_spacing_mm=planned_spacing(grids, config.modality, budget)
    )


class PretrainReporter(Reporter, Protocol):
    """A `Reporter` that also hears about slice-cache progress."""

    def on_cache(self, done: int, total: int) -> None: ...


@dataclass(frozen=True)
class PretrainResult:
    """What a pre-training run produced."""

    run_dir: Path
    bundle_dir: Path | None
    report: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# the objective


class PretrainObjective(nn.Module):
    """``forward(batch) -> {"loss", "la", "gp", "feature_std", "mean_offdiag_similarity"}``.

    Both slices of every pair go through the network as one batch of 2B (one pass, shared
    normalisation statistics, and a single forward call as DDP requires). The collapse monitor
    reads the LA embedding (``sal``) or the global feature (``pcl``).
    """

    def __init__(self, network: SALNetwork, options: PretrainOptions) -> None:
        super().__init__()
        self.network = network
        self.options = options

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        images = torch.cat([batch["image_i"], batch["image_j"]])
        z_i, z_j = batch["z_i"], batch["z_j"]
        outputs: dict[str, torch.Tensor | float] = {}
        if self.options.method == "pcl":
            unet = self.network.unet
            bottleneck = unet.features(images, up_to="bottleneck").bottleneck
            g = self.network.global_head(bottleneck)
            monitored = g[:, :, None, None]
            loss = self._contrastive(g, torch.cat([z_i, z_j]))
            outputs["gp"] = loss.detach()
        else:
            embeddings, g = self.network.embed_levels(images)
            monitored = embeddings[0]
            la = torch.stack([self._alignment(*e.chunk(2)) for e in embeddings]).mean()
            outputs["la"] = la.detach()
            loss = self.options.la_weight * la
            if self.options.gp != "none":
                gp = self._positional(g, z_i, z_j)
                outputs["gp"] = gp.detach()
                loss = loss + self.options.gp_weight * gp
        outputs.update(collapse_monitor(monitored))
        outputs["loss"] = loss
        return outputs

    def _alignment(self, e_i: torch.Tensor, e_j: torch.Tensor) -> torch.Tensor:
        options = self.options
        variant, temperature, symmetric = (
            options.la_variant, options.temperature, options.symmetric
        )  # fmt: skip
        if options.window_radius == 0:
            return local_alignment_loss(
                e_i, e_j, variant=variant, temperature=temperature, symmetric=symmetric
            )
        return window_alignment_loss(
            e_i, e_j, radius=options.window_radius, variant=variant, temperature=temperature,
            symmetric=symmetric,
        )  # fmt: skip

    def _positional(self, g: torch.Tensor, z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
        options, network = self.options, self.network
        g_i, g_j = g.chunk(2)
        if options.gp == "relative":
            return relative_position_loss(network.relative_head(g_i, g_j), z_i, z_j)
        z = torch.cat([z_i, z_j])
        if options.gp == "absolute":
            return absolute_position_loss(network.absolute_head(g), z)
        return self._contrastive(g, z)

    def _contrastive(self, g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """PCL's loss over the global batch (every process's slices, see `gather_batch`)."""
        return positional_contrastive_loss(
            gather_batch(g),
            gather_batch(z),
            threshold=self.options.pcl_threshold,
            temperature=self.options.pcl_temperature,
        )


def build_network(options: PretrainOptions, seed: int) -> SALNetwork:
    """The U-Net plus SAL heads, initialised from ``seed`` (identical on every DDP rank)."""
    assert options.width is not None, "call PretrainOptions.resolved(device) first"
    torch.manual_seed(seed)
    unet = UNet2D(UNetConfig(width=options.width, depth=options.depth, norm=options.norm))
    main, *extra = options.la_levels
    heads = SALHeadsConfig(
        feature_level=main, embedding_dim=options.embedding_dim, extra_levels=tuple(extra)
    )
    return SALNetwork(unet, heads)


@dataclass
class PretrainTask:
    """The `TrainingTask` of pre-training."""

    module: PretrainObjective
    dataset: SlicePairDataset
    slices_per_sample: int = SlicePairDataset.slices_per_sample


def data_summary(volumes: Sequence[np.ndarray], dataset: SlicePairDataset) -> dict[str, Any]:
    """Counts and shape ranges for the report and the bundle's provenance."""
    shapes = np.array([v.shape for v in volumes])
    return {
        "scans": len(volumes),
        "scans_used": len(dataset.scans),
        "slices": int(shapes[:, 0].sum()),
        "slices_per_scan": [int(shapes[:, 0].min()), int(shapes[:, 0].max())],
        "slice_shape_min": [int(shapes[:, 1].min()), int(shapes[:, 2].min())],
        "slice_shape_max": [int(shapes[:, 1].max()), int(shapes[:, 2].max())],
        "skipped": list(dataset.warnings),
    }


# ---------------------------------------------------------------------------------------------
# bundles


def load_base(spec: str, network: SALNetwork, notify: Callable[[str], None] | None = None) -> str:
    """Initialise ``network`` from a bundle (``org/name[@rev]``, a bundle folder or a run folder).

    The U-Net must have the same architecture; pre-training heads are loaded when the bundle
    carries matching ones. Returns the spec recorded as ``base_model``.
    """
    from salign_cli.bundles.store import load_bundle

    bundle = load_bundle(spec, notify=notify)
    expected = network.unet.config
    if bundle.contract.architecture != expected:
        raise OptionError(
            "from_bundle",
            f"{spec}: its U-Net {bundle.contract.architecture.to_dict()} differs from this "
            f"run's {expected.to_dict()}; drop --width/--norm or pass the bundle's values",
        )
    tensors = bundle.state_dict
    network.unet.load_state_dict({k: tensors[k] for k in network.unet.state_dict()})
    heads = {
        name[len(HEADS_PREFIX) :]: t for name, t in tensors.items() if name.startswith(HEADS_PREFIX)
    }
    own = {k: v for k, v in network.state_dict().items() if not k.startswith("unet.")}
    if heads and all(k in heads and heads[k].shape == v.shape for k, v in own.items()):
        network.load_state_dict({**network.state_dict(), **heads})
    return spec


def write_pretrained_bundle(
    folder: Path, network: SALNetwork, preprocess: PreprocessConfig, provenance: dict[str, Any]
) -> Path:
    """Save the U-Net (plus the heads under ``sal_heads.``) as a bundle of kind "pretrained"."""
    from salign_cli.bundles.contract import BundleContract
    from salign_cli.bundles.store import save_bundle

    state = dict(network.unet.state_dict())
    state.update(
        {
            f"{HEADS_PREFIX}{name}": tensor
            for name, tensor in network.state_dict().items()
            if not name.startswith("unet.")
        }
    )
    contract = BundleContract(
        kind="pretrained",
        architecture=network.unet.config,
        modality=preprocess.modality,
        classes={"0": "background"},
        preprocessing=preprocess,
        pretraining=provenance,
    )
    return save_bundle(folder, state, contract)


# ---------------------------------------------------------------------------------------------
# the stage


def pretrain(
    folders: Sequence[Path] = (),
    *,
    workspace: Workspace | Path | str | None = None,
    options: PretrainOptions | None = None,
    train_config: TrainConfig | None = None,
    runtime: RuntimeOptions | None = None,
    resume: Path | bool = False,
    rebuild_cache: bool = False,
    base: str | None = None,
    run_dir: Path | None = None,
    reporter: PretrainReporter | None = None,
) -> PretrainResult:
    """Pre-train on the scans under ``folders`` (or every indexed scan) and write a bundle.

    ``resume`` (a run folder, or ``True`` for the newest pre-training run) continues that run
    exactly from its newest intact checkpoint, with the options and scans stored there.
    ``base`` starts from an existing bundle. ``run_dir`` names the run folder to use (the
    multi-GPU launcher creates it once for all processes).

    Example::

        result = pretrain([Path("scans")], train_config=TrainConfig(steps=300, batch_size=32))
        result.bundle_dir   # runs/pretrain-<ts>/bundle
    """
    space = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    space = space.ensure()
    runtime = runtime or RuntimeOptions()
    reporter = reporter or _SilentPretrainReporter()
    context = distributed_from_env()
    device = resolve_device(runtime.device, context.local_rank)
    with distributed_session(context, device):
        return _pretrain(
            folders,
            space,
            options,
            train_config,
            runtime,
            resume=resume,
            rebuild_cache=rebuild_cache,
            base=base,
            run_dir=run_dir,
            reporter=reporter,
            context=context,
            device=device,
        )


class _SilentPretrainReporter(SilentReporter):
    def on_cache(self, done: int, total: int) -> None:
        pass


def _check_resumed_scans(
    run_dir: Path, scans: Sequence[ScanEntry], folders: Sequence[Path]
) -> None:
    """A resumed run trains on the scans it stored; ``salign pretrain DIR --resume`` may name
    their folders (the command as first typed, plus ``--resume``), never other ones."""
    roots = [folder_key(folder) for folder in folders]
    stray = [scan for scan in scans if roots and not lies_under(scan.image_path, roots)]
    if stray:
        raise InputError(
            f"--resume: {run_dir} pre-trains on scans outside {', '.join(map(str, folders))} "
            f"(e.g. {stray[0].image_path}); drop the folders to continue it, or start a new "
            "run without --resume"
        )


def _pretrain(
    folders: Sequence[Path],
    workspace: Workspace,
    options: PretrainOptions | None,
    train_config: TrainConfig | None,
    runtime: RuntimeOptions,
    *,
    resume: Path | bool,
    rebuild_cache: bool,
    base: str | None,
    run_dir: Path | None,
    reporter: PretrainReporter,
    context: DistributedContext,
    device: torch.device,
) -> PretrainResult:
    if resume:
        run_dir = workspace.run_to_resume("pretrain", resume)
        setup = PretrainSetup.from_checkpoint(resume_meta(run_dir, "pretrain", reporter.on_message))
        _check_resumed_scans(run_dir, list(setup.scans), folders)
    else:
        setup = plan_pretrain_setup(
            folders, workspace, options, train_config, base, reporter.on_message, context, device
        )
        run_dir = shared_run_dir(workspace, "pretrain", run_dir, context, device)
    options, train_config, scans = setup.options, setup.train_config, setup.scans
    preprocess, base = setup.preprocess, setup.base_model

    cache = SliceCache(workspace.cache_dir)
    volumes = on_main_first(
        context,
        lambda: (
            load_cached_slices(
                scans,
                preprocess,
                cache,
                reporter if context.is_main else None,
                rebuild=rebuild_cache and context.is_main,
                workers=min(8, os.cpu_count() or 1),
            ).images
        ),
    )
    dataset = SlicePairDataset(
        volumes,
        pair_distance=[options.pair_distance_for(scan.spacing_mm) for scan in scans],
        pair_shift=options.pair_shift,
        pair_rotation_deg=options.pair_rotation_deg,
        pair_scale=options.pair_scale,
        augment=PairAugmentConfig(size=options.size),
        seed=train_config.seed,
        names=[s.image_path for s in scans],
    )
    if context.is_main:
        for warning in dataset.warnings:
            reporter.on_message(warning)

    network = build_network(options, train_config.seed)
    if base and not resume:
        load_base(base, network, reporter.on_message)

    result = None
    if options.method != "scratch":
        task = PretrainTask(module=PretrainObjective(network, options), dataset=dataset)
        result = train(
            task,
            train_config,
            run_dir,
            task_config=setup.to_task_config(),
            runtime=runtime,
            resume=bool(resume),
            reporter=reporter,
        )
    if not context.is_main:
        return PretrainResult(run_dir=run_dir, bundle_dir=None, report={})

    summary = data_summary(volumes, dataset)
    steps = 0 if result is None else result.steps
    logged = _logged_metrics(run_dir / METRICS_FILE)
    provenance = {
        "method": options.method,
        "steps": steps,
        "options": options.to_dict(),
        "train": train_config.to_dict(),
        "seed": train_config.seed,
        "case_ids": [s.case_id for s in scans],
        "data": summary,
        "run": run_dir.name,
        "base_model": base,
    }
    bundle_dir = write_pretrained_bundle(run_dir / "bundle", network.cpu(), preprocess, provenance)
    report = {
        "kind": "pretrain",
        "run_dir": str(run_dir),
        "bundle": str(bundle_dir),
        "method": options.method,
        "steps": steps,
        "resumed_from_step": None if result is None else result.start_step,
        "elapsed_s": None if result is None else result.elapsed_s,
        "slices_per_s": None if result is None else result.slices_per_s,
        "final_metrics": logged[-1] if logged else {},
        "loss_curve": _loss_curve(logged),
        "device": str(device),
        "world_size": context.world_size,
        "options": options.to_dict(),
        "train": train_config.to_dict(),
        "data": summary,
    }
    write_json(run_dir / "report.json", report)
    return PretrainResult(run_dir=run_dir, bundle_dir=bundle_dir, report=report)


def _logged_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _loss_curve(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """First, middle and last logged loss terms and collapse monitor."""
    if not rows:
        return {}
    picks = {"first": rows[0], "middle": rows[len(rows) // 2], "last": rows[-1]}
    keys = ("step", "loss", "la", "gp", "feature_std", "mean_offdiag_similarity")
    return {name: {k: row[k] for k in keys if k in row} for name, row in picks.items()}
