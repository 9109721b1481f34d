"""`salign finetune` and `salign bench few-label` from the command line: exit codes and output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from salign_cli.data.synthetic import write_dataset

TINY = ["--steps", "2", "--batch-size", "2", "--size", "32", "--width", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synthetic") / "data", cases=3, test_cases=0)


def test_finetune_needs_a_number_of_labels(cli, workspace: Path) -> None:
    result = cli("finetune", "--from", "scratch")
    assert result.exit_code == 2
    assert "--labels N" in result.output


def test_finetune_without_pretraining_says_what_to_run(
    cli, workspace: Path, synthetic: Path
) -> None:
    result = cli("finetune", "--labels", "1", "--data", str(synthetic), *TINY)
    assert result.exit_code == 2
    assert "salign pretrain" in result.output


def test_unknown_case_is_an_input_error(cli, workspace: Path, synthetic: Path) -> None:
    result = cli(
        "finetune", "--cases", "nope", "--from", "scratch", "--data", str(synthetic), *TINY
    )
    assert result.exit_code == 2
    assert "nope" in result.output


def test_finetune_prints_the_dice_table_and_writes_a_report(
    cli, workspace: Path, synthetic: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    result = cli(
        "finetune", "--labels", "1", "--from", "scratch", "--data", str(synthetic),
        "--report", str(report), *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "validation Dice over 2 held-out scans" in result.output
    # the plan is printed before training, one reason per choice
    for line in (
        "spacing: ",
        "patch: 32×32 — fixed by --size or the recipe",
        "context: ±1",
        "semi: ",
    ):
        assert line in result.output, line
    for name in ("vessel", "organ", "overall"):
        assert name in result.output
    payload = json.loads(report.read_text())
    assert len(payload["labelled_case_ids"]) == 1 and payload["seed"] == 0
    assert payload["plan"]["patch_size"] == [32, 32] and payload["plan"]["batch_size"] == 2
    assert Path(payload["bundle"], "salign.json").is_file()

    # --resume picks the newest run; --resume-from names one; both finish where it stopped
    for flags in (["--resume"], ["--resume-from", payload["run_dir"]]):
        again = cli("finetune", *flags, "--report", str(report), "--quiet")
        assert again.exit_code == 0, again.output
        assert json.loads(report.read_text())["resumed_from_step"] == payload["steps"]


def test_bench_rejects_an_unknown_method(cli, workspace: Path, synthetic: Path) -> None:
    result = cli("bench", "few-label", str(synthetic), "--methods", "scratch,simclr")
    assert result.exit_code == 2
    assert "simclr" in result.output


def test_excluded_cases_are_neither_trained_on_nor_validated_nor_unlabelled(
    cli, workspace: Path, synthetic: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    result = cli(
        "finetune", "--cases", "synthetic_000", "--exclude", "synthetic_002", "--from", "scratch",
        "--data", str(synthetic), "--report", str(report), "--quiet", *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(report.read_text())
    assert payload["excluded_case_ids"] == ["synthetic_002"]
    assert payload["validation_case_ids"] == ["synthetic_001"]
    # the only other scan is validation, the excluded one is held out: nothing is unlabelled
    assert payload["semi_supervision"]["unlabelled_scans"] == 0
