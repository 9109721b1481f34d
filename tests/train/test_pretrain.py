"""`salign pretrain` end to end on tiny synthetic volumes, plus the objective's loss terms."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from tiny_training import make_tiny_task

from salign_cli.bundles.store import build_model, load_bundle
from salign_cli.data.synthetic import make_case
from salign_cli.errors import InputError
from salign_cli.train.pretrain import (
    PretrainObjective,
    PretrainOptions,
    build_network,
    pretraining_preprocess,
)
from salign_cli.train.scans import ScanEntry

TINY = ("--steps", "3", "--batch-size", "4", "--size", "16", "--width", "4", "-q")


@pytest.fixture
def tiny_scans(tmp_path: Path) -> Path:
    """Three 24 x 20 x 6 synthetic MR volumes (slices along the 2 mm axis)."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for seed in range(3):
        case = make_case(seed, shape=(24, 20, 6), spacing_mm=(1.0, 1.0, 2.0))
        nib.save(nib.Nifti1Image(case.image, case.affine), folder / f"case_{seed}.nii.gz")
    return folder


def test_each_stage_refuses_to_resume_the_other_stages_run(cli, tiny_scans, tmp_path):
    # Issue 24, bug 2: `salign finetune --resume-from runs/pretrain-X` ended in a TypeError.
    workspace = tmp_path / "ws"
    result = cli("pretrain", str(tiny_scans), *TINY, "--workspace", str(workspace))
    assert result.exit_code == 0, result.output
    (run_dir,) = (workspace / "runs").glob("pretrain-*")
    result = cli("finetune", "--resume-from", str(run_dir), "--workspace", str(workspace), "-q")
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"--resume-from {run_dir}: a pretrain run" in result.output
    assert "salign pretrain --resume-from" in result.output


def test_cli_writes_a_pretrained_bundle_and_resumes(cli, tiny_scans, tmp_path):
    workspace, report = tmp_path / "ws", tmp_path / "report.json"
    result = cli(
        "pretrain", str(tiny_scans), *TINY, "--checkpoint-every", "2",
        "--workspace", str(workspace), "--report", str(report),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(report.read_text())
    run_dir = Path(summary["run_dir"])
    assert summary["steps"] == 3 and summary["method"] == "sal"
    assert summary["data"]["scans"] == 3 and summary["data"]["slices"] == 18
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and np.isfinite(rows[-1]["loss"])
    assert {"la", "gp", "feature_std", "mean_offdiag_similarity", "lr"} <= rows[-1].keys()
    assert [p.name for p in sorted((run_dir / "checkpoints").glob("*.json"))] == [
        "step-00000002.json",
        "step-00000003.json",
    ]

    bundle = load_bundle(run_dir / "bundle")
    contract = bundle.contract
    assert contract.kind == "pretrained" and contract.modality == "MR"
    assert contract.architecture.width == 4
    assert contract.pretraining["method"] == "sal" and contract.pretraining["steps"] == 3
    assert sorted(contract.pretraining["case_ids"]) == ["case_0", "case_1", "case_2"]
    assert contract.pretraining["options"]["window_radius"] == 3
    assert contract.preprocessing.target_spacing_mm == (1.0, 1.0)
    assert build_model(bundle)(torch.zeros(1, 1, 20, 24)).shape == (1, 2, 20, 24)

    again = cli("pretrain", "--resume", str(run_dir), "--workspace", str(workspace), "-q")
    assert again.exit_code == 0, again.output
    assert json.loads((run_dir / "report.json").read_text())["resumed_from_step"] == 3


def test_the_first_command_plus_resume_continues_its_run(cli, tiny_scans, tmp_path):
    # Issue 24, bug 5: `salign pretrain ./scans --resume` took ./scans for the run folder.
    workspace = tmp_path / "ws"
    first = ("pretrain", str(tiny_scans), *TINY, "--workspace", str(workspace))
    assert cli(*first).exit_code == 0
    (run_dir,) = (workspace / "runs").glob("pretrain-*")
    again = cli(*first, "--resume")
    assert again.exit_code == 0, again.output
    assert json.loads((run_dir / "report.json").read_text())["resumed_from_step"] == 3
    assert len(list((workspace / "runs").glob("pretrain-*"))) == 1
    other = tmp_path / "other"
    other.mkdir()
    refused = cli("pretrain", str(other), "--resume", "--workspace", str(workspace), "-q")
    assert refused.exit_code == 2
    assert f"--resume: {run_dir} pre-trains on scans outside {other}" in refused.output


def test_scratch_writes_an_untrained_bundle(cli, tiny_scans, tmp_path):
    result = cli(
        "pretrain", str(tiny_scans), *TINY, "--method", "scratch", "--workspace", str(tmp_path)
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "checkpoints").exists()
    contract = load_bundle(run_dir / "bundle").contract
    assert contract.pretraining["method"] == "scratch" and contract.pretraining["steps"] == 0


@pytest.mark.parametrize(("spacing", "expected"), [("native", None), ("2", (2.0, 2.0))])
def test_spacing_option_is_recorded_in_the_bundle(cli, tiny_scans, tmp_path, spacing, expected):
    result = cli(
        "pretrain", str(tiny_scans), *TINY, "--method", "scratch", "--spacing", spacing,
        "--workspace", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert load_bundle(run_dir / "bundle").contract.preprocessing.target_spacing_mm == expected


def test_ct_scans_default_to_the_median_spacing_floored_at_one_and_a_half_mm(cli, tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}}))
    for seed in range(2):  # 0.8 mm in-plane, 5 mm slices
        case = make_case(seed, shape=(24, 20, 6), spacing_mm=(0.8, 0.8, 5.0))
        nib.save(nib.Nifti1Image(case.image, case.affine), folder / f"ct_{seed}.nii.gz")
    result = cli(
        "pretrain", str(folder), *TINY, "--method", "scratch", "--workspace", str(tmp_path / "ws")
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "ws" / "runs").iterdir()
    contract = load_bundle(run_dir / "bundle").contract
    assert contract.modality == "CT"
    assert contract.preprocessing.target_spacing_mm == (1.5, 1.5)


def test_folder_without_scans_is_an_input_error(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no scans here")
    result = cli("pretrain", str(empty), *TINY, "--workspace", str(tmp_path / "ws"))
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_bad_option_values_are_input_errors(cli, tiny_scans, tmp_path):
    for bad in (
        ("--method", "simclr"),
        ("--gp", "sideways"),
        ("--feature-level", "1/3"),
        ("--spacing", "fine"),
    ):
        result = cli("pretrain", str(tiny_scans), *TINY, *bad, "--workspace", str(tmp_path))
        assert result.exit_code == 2, bad


@pytest.mark.parametrize(
    ("changes", "terms"),
    [
        ({}, {"la", "gp"}),
        ({"gp": "none"}, {"la"}),
        ({"gp": "absolute", "window_radius": 0, "la_variant": "literal"}, {"la", "gp"}),
        ({"gp": "contrastive"}, {"la", "gp"}),
        ({"method": "pcl"}, {"gp"}),
    ],
)
def test_objective_terms_add_up(changes, terms):
    base = make_tiny_task().module.options
    options = PretrainOptions(**{**base.to_dict(), **changes})
    objective = PretrainObjective(build_network(options, seed=0), options)
    batch = {key: value for key, value in _batch().items()}
    outputs = objective(batch)
    assert {"la", "gp"} & outputs.keys() == terms
    expected = outputs.get("la", 0.0) + options.gp_weight * outputs.get("gp", 0.0)
    assert float(outputs["loss"].detach()) == pytest.approx(float(expected), rel=1e-6)
    outputs["loss"].backward()
    assert 0.0 <= outputs["mean_offdiag_similarity"] <= 1.0 + 1e-6


def _batch() -> dict[str, torch.Tensor]:
    from torch.utils.data import default_collate

    dataset = make_tiny_task().dataset
    return default_collate([dataset[k] for k in range(4)])


def test_pair_distance_in_mm_follows_the_slice_spacing() -> None:
    from salign_cli.train.pretrain import PretrainOptions

    four_mm = PretrainOptions(pair_distance_mm=4.0)
    assert four_mm.pair_distance_for((1.0, 1.0, 1.0)) == 4  # isotropic 1 mm MR
    assert four_mm.pair_distance_for((0.8, 0.8, 5.0)) == 1  # 5 mm CT slices: at least one
    assert PretrainOptions(pair_distance_mm=10.0).pair_distance_for((0.8, 5.0, 0.8)) == 2
    assert PretrainOptions(pair_distance=3).pair_distance_for((0.8, 0.8, 5.0)) == 3  # slices


def test_several_la_levels_get_one_embedding_head_each() -> None:
    from salign_cli.train.pretrain import PretrainOptions, build_network

    options = PretrainOptions(feature_level="1/4+1/2", width=4, embedding_dim=8)
    assert options.la_levels == ("1/4", "1/2")
    network = build_network(options, seed=0)
    embeddings, _ = network.embed_levels(torch.zeros(2, 1, 32, 32))
    assert [tuple(e.shape) for e in embeddings] == [(2, 8, 8, 8), (2, 8, 16, 16)]
    with pytest.raises(InputError, match="join several"):
        PretrainOptions(feature_level="1/4+1/3")


def test_a_pretraining_setup_read_back_from_its_checkpoint_record_is_the_same(tmp_path):
    import json

    from salign_cli.data.preprocess import PreprocessConfig
    from salign_cli.train.engine import TrainConfig
    from salign_cli.train.pretrain import PretrainOptions, PretrainSetup
    from salign_cli.train.scans import ScanEntry

    setup = PretrainSetup(
        options=PretrainOptions(width=8, size=32),
        train_config=TrainConfig(steps=4, batch_size=2),
        scans=(ScanEntry("a", str(tmp_path / "a.nii.gz"), "h", "MR", (1.0, 1.0, 2.0)),),
        preprocess=PreprocessConfig(modality="MR"),
        base_model=None,
    )
    stored = {
        "task_config": json.loads(json.dumps(setup.to_task_config())),
        "train_config": setup.train_config.to_dict(),
    }
    assert PretrainSetup.from_checkpoint(stored) == setup


def test_auto_spacing_is_what_a_finetune_from_scratch_would_plan(tmp_path: Path) -> None:
    # LA-like scans (200×140 slices at 0.625 mm) would leave 3 slices a step at their own
    # spacing; the fine-tune plan coarsens them, and a fine-tune keeps its base's spacing, so
    # pre-training must coarsen them the same way. The scans are stored LPS-flipped and with
    # the slice axis first: the rule reads their canonical (RAS) grid from the headers.
    affine = np.zeros((4, 4))  # file axes (z, x, y): columns give each axis' world direction
    affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = 0.625, -0.625, -0.625, 1.0
    scans = []
    for index in range(3):
        path = tmp_path / f"la_{index}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((20, 200, 140), np.float32), affine), path)
        scans.append(ScanEntry(f"la_{index}", str(path), "hash", "MR", (0.625,) * 3))
    cpu = pretraining_preprocess(scans, "auto", torch.device("cpu")).target_spacing_mm
    assert cpu is not None and cpu[0] == cpu[1] and 0.95 < cpu[0] < 1.0
    # a CUDA device plans with the gpu profile's larger steps: finer; a number is obeyed
    gpu = pretraining_preprocess(scans, "auto", torch.device("cuda")).target_spacing_mm
    assert gpu is not None and 0.625 < gpu[0] < cpu[0]
    assert pretraining_preprocess(scans, 0.8, torch.device("cpu")).target_spacing_mm == (0.8, 0.8)
