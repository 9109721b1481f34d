"""`salign suggest` end to end on two kinds of synthetic scans, and the list it writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from nifti import write_nifti

from salign_cli.data.synthetic import make_case
from salign_cli.errors import InputError
from salign_cli.suggest.lists import read_case_list
from salign_cli.suggest.stage import suggest_scans, suggestion_pool
from salign_cli.workspace import Workspace

SHAPE = (32, 32, 12)


def bodies(seed: int) -> np.ndarray:
    """Kind A: a synthetic body with a vessel and an organ."""
    return make_case(seed, shape=SHAPE).image


def stripes(seed: int) -> np.ndarray:
    """Kind B: fine stripes over the whole field of view, nothing like a body."""
    rng = np.random.default_rng(seed)
    x = np.arange(SHAPE[0])[:, None, None]
    period = rng.uniform(2.5, 3.5)
    field = 1000 + 800 * np.sign(np.sin(2 * np.pi * x / period)) + rng.normal(0, 20, SHAPE)
    return np.broadcast_to(field, SHAPE).astype(np.float32)


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    """Four scans of kind A and three of kind B, unlabelled, in one folder."""
    folder = tmp_path / "scans"
    for seed in range(4):
        write_nifti(folder / f"body_{seed}.nii.gz", bodies(seed))
    for seed in range(3):
        write_nifti(folder / f"stripes_{seed}.nii.gz", stripes(seed))
    return folder


def test_two_kinds_of_scan_get_one_suggestion_each(scans, make_bundle, tmp_path):
    workspace = Workspace(tmp_path / "ws").ensure()
    candidates, labelled = suggestion_pool([scans], workspace)
    assert (len(candidates), len(labelled)) == (7, 0)
    model = str(make_bundle(kind="pretrained"))
    result = suggest_scans(candidates, 2, model=model, workspace=workspace, device="cpu")
    assert sorted(case_id.split("_")[0] for case_id in result.case_ids) == ["body", "stripes"]
    assert result.suggestions[0].case_id.startswith("body")  # the larger group first
    assert result.suggestions[0].group_size == 4
    assert result.model_kind == "pretrained"
    assert all(s.expected_dice is None for s in result.suggestions)


def test_a_labelled_scan_covers_its_kind_and_is_never_suggested(scans, make_bundle, tmp_path):
    write_nifti(scans / "imagesTr" / "stripes_9.nii.gz", stripes(9))
    write_nifti(scans / "labelsTr" / "stripes_9.nii.gz", np.zeros(SHAPE, np.uint8))
    workspace = Workspace(tmp_path / "ws").ensure()
    candidates, labelled = suggestion_pool([scans], workspace, exclude=["body_3"])
    assert [s.case_id for s in labelled] == ["stripes_9"]
    assert "body_3" not in {s.case_id for s in candidates}
    model = str(make_bundle(kind="pretrained"))
    result = suggest_scans(
        candidates, 1, labelled=labelled, model=model, workspace=workspace, device="cpu"
    )
    assert result.case_ids[0].startswith("body")
    assert result.labelled == 1


def test_a_finetuned_model_adds_its_expected_dice(scans, make_bundle, tmp_path):
    workspace = Workspace(tmp_path / "ws").ensure()
    candidates, _ = suggestion_pool([scans], workspace)
    result = suggest_scans(
        candidates, 3, model=str(make_bundle()), workspace=workspace, device="cpu"
    )
    assert result.model_kind == "finetuned"
    assert all(0.0 <= s.expected_dice <= 1.0 for s in result.suggestions)
    assert "expected Dice" in result.suggestions[0].reason


def test_no_model_in_the_workspace_is_a_clear_error(scans, tmp_path):
    workspace = Workspace(tmp_path / "ws").ensure()
    candidates, _ = suggestion_pool([scans], workspace)
    with pytest.raises(InputError, match="salign pretrain"):
        suggest_scans(candidates, 2, workspace=workspace)


def test_the_cli_writes_a_list_finetune_reads(cli, scans, make_bundle, tmp_path):
    model = make_bundle(kind="pretrained")
    listing = tmp_path / "out" / "next.csv"
    listing.parent.mkdir()
    result = cli(
        "suggest", "2", "--data", str(scans), "--model", str(model), "-o", str(listing),
        "-w", str(tmp_path / "ws"), "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "label next: 2 of 7 unlabelled scans" in result.output
    rows = list(csv.DictReader(listing.open(encoding="utf-8")))
    assert [row["rank"] for row in rows] == ["1", "2"]
    assert read_case_list(listing) == tuple(row["case_id"] for row in rows)
    as_json = tmp_path / "out" / "next.json"
    assert cli(
        "suggest", "2", "--model", str(model), "-o", str(as_json), "-w", str(tmp_path / "ws"),
        "--device", "cpu", "-q",
    ).exit_code == 0  # fmt: skip
    assert json.loads(as_json.read_text())["cases"] == list(read_case_list(listing))


def test_the_cli_refuses_zero_and_an_empty_workspace(cli, tmp_path):
    assert cli("suggest", "0", "-w", str(tmp_path / "ws")).exit_code == 2
    empty = cli("suggest", "2", "-w", str(tmp_path / "ws"))
    assert empty.exit_code == 2
    assert "no indexed scans" in empty.output


def test_a_model_of_another_modality_is_refused_with_the_fix(scans, make_bundle, tmp_path):
    workspace = Workspace(tmp_path / "ws").ensure()
    candidates, _ = suggestion_pool([scans], workspace)
    ct_model = str(make_bundle(modality="CT", kind="pretrained"))
    with pytest.raises(InputError, match="a CT model, but the unlabelled scans are MR"):
        suggest_scans(candidates, 2, model=ct_model, workspace=workspace, device="cpu")
