"""Fine-tuning: options, default schedule, the starting network, and tiny end-to-end runs."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from salign_cli.data.synthetic import write_dataset
from salign_cli.errors import InputError
from salign_cli.train.engine import RuntimeOptions, TrainConfig
from salign_cli.train.finetune import SegmentationObjective, finetune
from salign_cli.train.finetune_setup import (
    SCRATCH,
    FinetuneOptions,
    FinetuneSetup,
    continues_finetuned,
    initial_network,
    is_alignment_pretraining,
    load_base,
    plan_overrides,
    plan_setup,
)
from salign_cli.train.plan import FinetunePlan
from salign_cli.train.recipe import CPU_RECIPE, GPU_RECIPE
from salign_cli.workspace import Workspace

CPU = RuntimeOptions(device="cpu")
TINY = {"steps": 2, "batch_size": 2, "size": 32, "width": 4, "checkpoint_every": 1, "context": 0}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four synthetic MSD-layout cases (classes vessel, organ in dataset.json)."""
    return write_dataset(tmp_path_factory.mktemp("synthetic") / "data", cases=4, test_cases=0)


def test_options_need_exactly_one_way_of_choosing() -> None:
    with pytest.raises(InputError, match="exactly one"):
        FinetuneOptions()
    with pytest.raises(InputError, match="exactly one"):
        FinetuneOptions(labels=1, case_ids=("a",))
    with pytest.raises(InputError, match="at least 1"):
        FinetuneOptions(labels=0)


# ---------------------------------------------------------------------------------------------
# options, schedule


def test_a_new_run_without_options_is_refused_not_given_one_label(tmp_path: Path) -> None:
    # Issue 24: the library fell back to labels=1, a default nobody chose
    with pytest.raises(InputError, match="needs options: FinetuneOptions"):
        finetune([tmp_path], workspace=tmp_path / "ws", base=SCRATCH)


def test_the_profile_picks_the_recipe_and_flags_override_single_fields() -> None:
    options = FinetuneOptions(labels=1)
    assert options.resolved_recipe("cpu") == CPU_RECIPE
    assert options.resolved_recipe("cuda") == GPU_RECIPE
    assert FinetuneOptions(labels=1, profile="gpu").resolved_recipe("cpu") == GPU_RECIPE
    tuned = FinetuneOptions(labels=1, steps=7, lr=0.01, context=0, size=32, augment=False)
    recipe = tuned.resolved_recipe("cpu")
    assert (recipe.steps, recipe.lr, recipe.context, recipe.patch_size) == (7, 0.01, 0, (32, 32))
    assert not recipe.augment.enabled and recipe.width == CPU_RECIPE.width
    with pytest.raises(InputError, match="profile must be one of"):
        FinetuneOptions(labels=1, profile="tpu")
    with pytest.raises(InputError, match="context must be >= 0"):
        FinetuneOptions(labels=1, context=-1)


def test_options_survive_the_checkpoint_round_trip() -> None:
    options = FinetuneOptions(labels=2, recipe=GPU_RECIPE, exclude_case_ids=("x",), steps=5)
    assert FinetuneOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options


def test_pretrained_layers_get_the_scaled_rate_and_the_head_the_full_one() -> None:
    from salign_cli.model.unet import UNet2D, UNetConfig

    unet = UNet2D(UNetConfig(width=4, depth=2))
    objective = SegmentationObjective(unet, patch_size=(8, 8), pretrained_lr_scale=0.25)
    body, head = objective.parameter_groups()
    assert body["lr_scale"] == 0.25 and head["lr_scale"] == 1.0
    assert {id(p) for p in head["params"]} == {id(p) for p in unet.head.parameters()}
    assert len(body["params"]) + len(head["params"]) == len(list(unet.parameters()))


# ---------------------------------------------------------------------------------------------
# end to end


def test_finetune_from_scratch_writes_a_finetuned_bundle(synthetic: Path, tmp_path: Path) -> None:
    from salign_cli.bundles.store import build_model, load_bundle

    result = finetune(
        [synthetic],
        workspace=tmp_path / "ws",
        base="scratch",
        options=FinetuneOptions(labels=1, seed=1, **TINY),
        runtime=CPU,
    )
    assert len(result.labelled_case_ids) == 1
    assert len(result.validation_case_ids) == 3  # every other labelled scan
    assert result.class_names == {0: "background", 1: "vessel", 2: "organ"}
    bundle = load_bundle(result.bundle_dir)
    contract = bundle.contract
    assert contract.kind == "finetuned"
    assert contract.classes == {"0": "background", "1": "vessel", "2": "organ"}
    assert contract.finetuning["labelled_case_ids"] == list(result.labelled_case_ids)
    assert contract.finetuning["seed"] == 1 and contract.finetuning["base_model"] is None
    assert set(contract.evaluation["per_class_dice"]) == {"vessel", "organ"}
    assert contract.evaluation["held_out_cases"] == 3
    assert build_model(bundle).config.num_classes == 3
    # the recipe and the inference defaults travel with the bundle
    assert contract.finetuning["recipe"]["steps"] == TINY["steps"]
    assert contract.finetuning["recipe"]["patch_size"] == [32, 32]
    assert contract.inference_defaults.tta and contract.inference_defaults.mirror == "lr"
    # so does the plan, with the flags it was told (steps, batch, size) and what it chose
    plan = FinetunePlan.from_dict(contract.finetuning["plan"])
    assert (plan.steps, plan.batch_size, plan.patch_size) == (2, 2, (32, 32))
    assert plan.reasons["patch"] == "fixed by --size or the recipe" and plan.context == 0
    report = json.loads((result.run_dir / "report.json").read_text())
    assert report["validation"]["n_cases"] == 3
    # `salign segment` picks the newest fine-tuning run with a bundle.
    assert Workspace(tmp_path / "ws").latest_run("finetune") == result.run_dir


def test_resume_continues_with_the_stored_cases(synthetic: Path, tmp_path: Path) -> None:
    first = finetune(
        [synthetic],
        workspace=tmp_path / "ws",
        base="scratch",
        options=FinetuneOptions(labels=2, seed=4, max_validation_cases=0, **TINY),
        runtime=CPU,
    )
    again = finetune(workspace=tmp_path / "ws", resume=first.run_dir, runtime=CPU)
    assert again.labelled_case_ids == first.labelled_case_ids
    assert again.report["resumed_from_step"] == TINY["steps"]
    assert again.validation is None  # max_validation_cases=0 was stored with the run


@pytest.mark.parametrize(("method", "rate"), [("scratch", 1.0), ("sal", 0.3)])
def test_default_base_is_the_newest_pretraining_run(
    synthetic: Path, tmp_path: Path, method: str, rate: float
) -> None:
    from salign_cli.bundles.store import load_bundle
    from salign_cli.train.pretrain import PretrainOptions, pretrain

    workspace = tmp_path / "ws"
    with pytest.raises(InputError, match="salign pretrain"):
        finetune([synthetic], workspace=workspace, options=FinetuneOptions(labels=1), runtime=CPU)
    pretrained = pretrain(
        [synthetic],
        workspace=workspace,
        options=PretrainOptions(method=method, width=4, size=32),  # type: ignore[arg-type]
        train_config=TrainConfig(steps=2, batch_size=2, checkpoint_every=2),
        runtime=CPU,
    )
    result = finetune(
        workspace=workspace,
        options=FinetuneOptions(labels=1, max_validation_cases=1, **TINY),
        runtime=CPU,
    )
    contract = load_bundle(result.bundle_dir).contract
    assert contract.finetuning["base_model"] == str(pretrained.bundle_dir)
    assert contract.pretraining["method"] == method
    assert contract.evaluation["held_out_cases"] == 1
    # only a SAL pre-training's layers train slower; the plan says so and the recipe records it
    assert contract.finetuning["recipe"]["pretrained_lr_scale"] == rate
    assert FinetunePlan.from_dict(contract.finetuning["plan"]).pretrained_lr_scale == rate


def _plan(**fields: object) -> FinetunePlan:
    base = {
        "target_spacing_mm": (1.0, 1.0),
        "slice_axis": 2,
        "patch_size": (32, 32),
        "batch_size": 2,
        "depth": 3,
        "context": 1,
        "steps": 2,
        "semi": False,
        "largest_component": True,
        "reasons": {},
    }
    return FinetunePlan(**{**base, **fields})  # type: ignore[arg-type]


def test_initial_network_keeps_the_bundle_and_replaces_the_head(make_bundle) -> None:
    from salign_cli.bundles.store import load_bundle

    folder = make_bundle(kind="pretrained", classes=("background", "foreground"))
    bundle = load_base(str(folder), "MR")
    model, preprocess, origin = initial_network(
        bundle, 4, _plan(context=0), modality="MR", width=8, seed=0, base_spec=str(folder)
    )
    saved = load_bundle(folder).state_dict
    own = model.state_dict()
    assert all(torch.equal(own[k], saved[k]) for k in own if not k.startswith("head."))
    assert own["head.weight"].shape[0] == 4 and model.config.num_classes == 4
    assert model.config.width == 4  # the bundle's architecture wins over the width default
    assert origin["base_model"] == str(folder) and preprocess.modality == "MR"
    # the bundle fixes what its network was trained with: spacing and depth
    overrides = plan_overrides(FinetuneOptions(labels=1), CPU_RECIPE, bundle)
    assert overrides.depth == bundle.contract.architecture.depth
    assert overrides.spacing == (bundle.contract.preprocessing.target_spacing_mm or "native")
    with pytest.raises(InputError, match="MR bundle"):
        load_base(str(folder), "CT")


def test_the_plan_obeys_a_recipe_that_fixes_the_patch_and_the_batch() -> None:
    # a recipe's batch_size / patch_size (benchmarks' --set) were once re-planned silently
    recipe = CPU_RECIPE.with_overrides(batch_size=16, patch_size=(32, 48))
    overrides = plan_overrides(FinetuneOptions(labels=1), recipe, None)
    assert (overrides.batch_size, overrides.patch_size) == (16, (32, 48))
    flags = FinetuneOptions(labels=1, batch_size=12, size=40)
    overrides = plan_overrides(flags, flags.resolved_recipe("cpu"), None)
    assert (overrides.batch_size, overrides.patch_size) == (12, (40, 40))
    planless = plan_overrides(FinetuneOptions(labels=1), CPU_RECIPE, None)
    assert (planless.batch_size, planless.patch_size) == (None, None)


def test_a_finetuned_model_of_the_same_classes_continues_with_its_head(make_bundle) -> None:
    # issue 23: more labels for the same task start from the model, head included
    from salign_cli.bundles.store import load_bundle

    classes = ("background", "foreground")
    folder = make_bundle(kind="finetuned", classes=classes, modality="MR")
    bundle = load_base(str(folder), "MR")
    assert continues_finetuned(bundle, list(classes))
    assert not continues_finetuned(bundle, ["background", "tumour"])
    overrides = plan_overrides(FinetuneOptions(labels=1), CPU_RECIPE, bundle, list(classes))
    assert overrides.continues_finetuned
    model, _, _ = initial_network(
        bundle, 2, _plan(context=0), modality="MR", width=8, seed=0, keep_head=True
    )
    saved = load_bundle(folder).state_dict
    assert all(torch.equal(tensor, saved[name]) for name, tensor in model.state_dict().items())
    pretrained = load_base(str(make_bundle(kind="pretrained", classes=classes)), "MR")
    assert not continues_finetuned(pretrained, list(classes))


def test_scratch_network_is_built_as_planned() -> None:
    plan = _plan(target_spacing_mm=(1.5, 1.5), depth=2, context=2)
    model, preprocess, origin = initial_network(None, 3, plan, modality="CT", width=4, seed=0)
    assert model.config.depth == 2 and model.config.in_channels == 5
    assert model.config.num_classes == 3 and model.config.width == 4
    assert preprocess.modality == "CT" and preprocess.target_spacing_mm == (1.5, 1.5)
    assert preprocess.context == 2 and origin["base_model"] is None


def test_spacing_option_is_checked_before_any_work() -> None:
    with pytest.raises(InputError, match="spacing must be auto, native or a positive"):
        FinetuneOptions(labels=1, spacing="coarse")


def test_validation_dice_is_finite_on_synthetic_data(synthetic: Path, tmp_path: Path) -> None:
    result = finetune(
        [synthetic],
        workspace=tmp_path / "ws",
        base="scratch",
        options=FinetuneOptions(case_ids=("synthetic_000",), max_validation_cases=1, **TINY),
        runtime=CPU,
    )
    assert result.labelled_case_ids == ("synthetic_000",)
    assert result.validation is not None
    assert all(
        0.0 <= c.dice.mean <= 1.0 and math.isfinite(c.dice.mean) for c in result.validation.classes
    )


def test_excluding_an_unknown_case_id_is_an_error_not_a_silent_leak(
    synthetic: Path, tmp_path: Path
) -> None:
    options = FinetuneOptions(labels=1, exclude_case_ids=("no_such_case",), steps=1)
    with pytest.raises(InputError, match="excluded case ids not found"):
        finetune(
            [synthetic], workspace=tmp_path / "ws", base="scratch", options=options, runtime=CPU
        )


def test_a_setup_read_back_from_its_checkpoint_record_is_the_same_setup(
    synthetic: Path, tmp_path: Path
) -> None:
    space = Workspace(tmp_path / "ws").ensure()
    options = FinetuneOptions(labels=2, seed=1, **TINY)

    notes: list[str] = []
    setup, model = plan_setup([synthetic], space, SCRATCH, options, "cpu", notes.append)
    assert model.config == setup.architecture
    assert len(setup.labelled_cases) == 2 and len(setup.validation_cases) == 2
    stored = {
        "task_config": json.loads(json.dumps(setup.to_task_config())),  # as a checkpoint holds it
        "train_config": setup.train_config.to_dict(),
    }
    assert FinetuneSetup.from_checkpoint(stored, tmp_path) == setup


@pytest.mark.parametrize("flag", [None, True])
def test_the_plans_bias_field_choice_is_what_the_recipe_trains_with(
    synthetic: Path, tmp_path: Path, flag: bool | None
) -> None:
    # the synthetic scans are small crops: planned off, so the recipe's bias_p is zeroed;
    # --bias-field keeps the recipe's probability
    space = Workspace(tmp_path / "ws").ensure()
    options = FinetuneOptions(labels=1, bias_field=flag, max_validation_cases=0, **TINY)
    setup, _ = plan_setup([synthetic], space, SCRATCH, options, "cpu", lambda _: None)
    assert setup.plan.bias_field is bool(flag)
    expected = CPU_RECIPE.augment.bias_p if flag else 0.0
    assert CPU_RECIPE.augment.bias_p > 0 and setup.recipe.augment.bias_p == expected
    assert setup.recipe_as_run.to_dict()["augment"]["bias_p"] == expected  # as the bundle records


def test_a_checkpoint_from_before_plans_cannot_be_resumed_and_says_so(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="before fine-tuning plans were recorded"):
        FinetuneSetup.from_checkpoint({"task_config": {}, "train_config": {}}, tmp_path)


@pytest.mark.parametrize(
    ("coarse_fraction", "kinds"),
    [
        # ceil(0.2 of 2 steps): step 1 supervised, step 2 semi-supervised
        (0.0, [(1, ""), (2, "semi-supervised")]),
        # and with coarse-to-fine, round(0.5 of 2): step 1 also at half resolution
        (0.5, [(1, "half-resolution"), (2, "full-resolution semi-supervised")]),
    ],
)
def test_a_semi_supervised_run_times_each_kind_of_step_before_it_trains(
    synthetic: Path, tmp_path: Path, coarse_fraction: float, kinds: list[tuple[int, str]]
) -> None:
    from salign_cli.train.finetune import SilentFinetuneReporter
    from salign_cli.train.recipe import CPU_RECIPE
    from salign_cli.train.step_costs import StepCosts

    class Recording(SilentFinetuneReporter):
        def __init__(self) -> None:
            self.estimates: list[StepCosts] = []

        def on_estimate(self, costs: StepCosts) -> None:
            self.estimates.append(costs)

    reporter = Recording()
    options = FinetuneOptions(
        labels=1,
        semi="fixmatch",
        max_validation_cases=0,
        recipe=CPU_RECIPE.with_overrides(coarse_fraction=coarse_fraction),
        **TINY,
    )
    result = finetune(
        [synthetic],
        workspace=tmp_path / "ws",
        base=SCRATCH,
        options=options,
        runtime=CPU,
        reporter=reporter,
    )
    assert result.report["semi_supervision"]["method"] == "fixmatch"
    [costs] = reporter.estimates
    assert (costs.steps, costs.start_step) == (2, 0)
    assert [(phase.until, phase.kind) for phase in costs.phases] == kinds
    assert all(phase.seconds > 0 for phase in costs.phases)
    assert result.report["step_costs"] == costs.to_dict()  # the estimate beside elapsed_s


def test_only_a_sal_pretraining_plans_the_shorter_schedule(make_bundle) -> None:
    classes = ("background", "foreground")
    untrained = load_base(str(make_bundle(kind="pretrained", classes=classes)), "MR")
    assert untrained.contract.pretraining is not None
    assert untrained.contract.pretraining["method"] == "scratch"
    sal = dataclasses.replace(
        untrained,
        contract=dataclasses.replace(
            untrained.contract, pretraining={**untrained.contract.pretraining, "method": "sal"}
        ),
    )
    finetuned = load_base(str(make_bundle(kind="finetuned", classes=classes)), "MR")
    assert is_alignment_pretraining(sal)
    assert not any(map(is_alignment_pretraining, (untrained, finetuned, None)))
    options = FinetuneOptions(labels=1)
    assert plan_overrides(options, CPU_RECIPE, sal).from_alignment
    assert not plan_overrides(options, CPU_RECIPE, untrained).from_alignment
    # a recipe that fixes the pre-trained layers' rate passes it to the plan as an override
    assert plan_overrides(options, CPU_RECIPE, sal).pretrained_lr_scale is None
    slowed = dataclasses.replace(CPU_RECIPE, pretrained_lr_scale=0.5)
    assert plan_overrides(options, slowed, sal).pretrained_lr_scale == 0.5
