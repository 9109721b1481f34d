"""The few-label protocol: method specs, the test split, aggregation, the plot, a tiny full run."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from salign_cli.bench.few_label import (
    FewLabelProtocol,
    FewLabelRun,
    curves,
    finished_pretraining,
    fixed_test_split,
    markdown_table,
    parse_method,
    run_few_label,
    split_methods,
    summarise_runs,
)
from salign_cli.bench.plot import COLOURS, plot_dice_vs_k
from salign_cli.data.synthetic import write_dataset
from salign_cli.errors import InputError
from salign_cli.train.engine import RuntimeOptions, TrainConfig
from salign_cli.train.pretrain import PretrainOptions
from salign_cli.train.recipe import CPU_RECIPE


def make_run(method: str, k: int, seed: int, mean: float) -> FewLabelRun:
    return FewLabelRun(method, k, seed, ("a",), {"a": mean, "mean": mean}, 1.0, "bundle")


def test_method_specs_parse_overrides_with_their_field_types() -> None:
    spec = parse_method("sal[la_variant=literal,window_radius=0,gp_weight=0.5,symmetric=false]")
    assert spec.method == "sal"
    assert spec.overrides == {
        "la_variant": "literal",
        "window_radius": 0,
        "gp_weight": 0.5,
        "symmetric": False,
    }
    assert parse_method("pcl").overrides == {}
    with pytest.raises(InputError, match="expected one of"):
        parse_method("simclr")
    with pytest.raises(InputError, match="not name=value"):
        parse_method("sal[radius=2]")


def test_fields_that_default_to_none_parse_as_their_annotated_type() -> None:
    # Issue 24, bug 3: the type came from the default, so `None` defaults kept strings and
    # PretrainOptions(pair_distance_mm="2.5") failed with a TypeError.
    spec = parse_method("sal[pair_distance_mm=2.5,width=32,spacing=1.5]")
    assert spec.overrides == {"pair_distance_mm": 2.5, "width": 32, "spacing": 1.5}
    assert dataclasses.replace(PretrainOptions(), **spec.overrides).pair_distance_mm == 2.5
    assert parse_method("sal[pair_distance_mm=none,spacing=native]").overrides == {
        "pair_distance_mm": None,
        "spacing": "native",
    }
    with pytest.raises(InputError, match="'width=wide'"):
        parse_method("sal[width=wide]")
    with pytest.raises(InputError, match="'symmetric=maybe'"):
        parse_method("sal[symmetric=maybe]")


def test_method_lists_split_on_commas_outside_brackets() -> None:
    # bug 3, second half: benchmarks/few_label.py split "sal[a=1,b=2]" into two methods
    assert split_methods("sal[feature_level=1/2,window_radius=0]+semi, pcl,") == (
        "sal[feature_level=1/2,window_radius=0]+semi",
        "pcl",
    )


def test_test_split_is_the_last_ids_in_sorted_order() -> None:
    ids = ["hippocampus_010", "hippocampus_002", "hippocampus_100", "hippocampus_001"]
    assert fixed_test_split(ids, 2) == ["hippocampus_010", "hippocampus_100"]
    with pytest.raises(InputError, match="only 4"):
        fixed_test_split(ids, 4)


def test_rows_are_mean_and_sample_sd_over_seeds() -> None:
    runs = [make_run("sal", 1, 0, 0.5), make_run("sal", 1, 1, 0.7), make_run("scratch", 1, 0, 0.4)]
    rows = summarise_runs(runs, ["scratch", "sal"])
    assert [(r.method, r.k, r.seeds) for r in rows] == [("scratch", 1, 1), ("sal", 1, 2)]
    mean, sd = rows[1].dice["mean"]
    assert mean == pytest.approx(0.6)
    assert sd == pytest.approx(math.sqrt((0.1**2 + 0.1**2) / 1))  # ddof = 1
    assert math.isnan(rows[0].dice["mean"][1])  # one seed: no sd
    table = markdown_table(rows)
    assert "| sal | 1 | 2 | 0.600 ± 0.141 | 0.600 ± 0.141 |" in table
    assert "| scratch | 1 | 1 | 0.400 | 0.400 |" in table
    assert curves(rows)["sal"] == [(1, pytest.approx(0.6), pytest.approx(0.1414, abs=1e-4))]


def test_plot_draws_each_method_in_its_colour(tmp_path: Path) -> None:
    from PIL import Image

    path = plot_dice_vs_k(
        {"scratch": [(1, 0.5, 0.05), (5, 0.7, math.nan)], "sal": [(1, 0.6, 0.02), (5, 0.8, 0.01)]},
        tmp_path / "plot.png",
    )
    image = Image.open(path).convert("RGB")
    assert image.size == (720, 480)
    colours = {colour for _, colour in image.getcolors(maxcolors=100_000)}
    assert COLOURS[0] in colours and COLOURS[1] in colours


def tiny_protocol(methods: tuple[str, ...], *, finetune_steps: int) -> FewLabelProtocol:
    """k = 1, seed 0, two test cases, a 4-wide network and two pre-training steps of two pairs."""
    return FewLabelProtocol(
        methods=methods,
        ks=(1,),
        seeds=(0,),
        test_cases=2,
        finetune=CPU_RECIPE.with_overrides(
            steps=finetune_steps, batch_size=2, width=4, patch_size=(32, 32)
        ),
        pretrain_size=32,
        pretrain_steps=2,
        pretrain_batch_size=2,
    )


def test_tiny_protocol_never_labels_a_test_case(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", cases=5, test_cases=0)
    protocol = tiny_protocol(("scratch", "sal"), finetune_steps=2)
    seen: list[tuple[int, int, list[str], list[str]]] = []

    def reference(k: int, seed: int, labelled, test) -> dict[str, float]:
        seen.append((k, seed, sorted(labelled), list(test)))
        return {"vessel": 0.5, "organ": 0.7, "mean": 0.6}

    result = run_few_label(
        data,
        protocol,
        workspace=tmp_path / "ws",
        output_dir=tmp_path / "out",
        runtime=RuntimeOptions(device="cpu"),
        references={"plain": reference},
    )
    assert result.test_case_ids == ("synthetic_003", "synthetic_004")
    assert len(result.runs) == 3
    for run in result.runs:
        assert not set(run.labelled_case_ids) & set(result.test_case_ids)
        assert len(run.labelled_case_ids) == run.k
        assert 0.0 <= run.dice["mean"] <= 1.0
    scratch, sal, plain = result.runs
    assert scratch.labelled_case_ids == sal.labelled_case_ids  # same scans for every method
    # the reference is handed the very same labelled scans and test split
    assert seen == [(1, 0, list(scratch.labelled_case_ids), ["synthetic_003", "synthetic_004"])]
    assert plain.dice["mean"] == 0.6
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert payload["test_split"]["case_ids"] == ["synthetic_003", "synthetic_004"]
    assert [row["method"] for row in payload["summary"]] == ["scratch", "sal", "plain"]
    assert (tmp_path / "out" / "few_label.png").is_file()
    assert (tmp_path / "out" / "table.md").read_text().startswith("| method | k | seeds |")


def test_a_finished_pretraining_in_the_output_folder_is_reused_only_for_the_same_settings(
    tmp_path: Path,
) -> None:
    data = write_dataset(tmp_path / "data", cases=4, test_cases=0)
    protocol = tiny_protocol(("sal",), finetune_steps=1)

    def run(seed: int, proto: FewLabelProtocol = protocol):
        return run_few_label(
            data,
            dataclasses.replace(proto, seeds=(seed,)),
            workspace=tmp_path / "ws",
            output_dir=tmp_path / "out",
            runtime=RuntimeOptions(device="cpu"),
            references={},
        )

    first = run(0)
    assert "reused" not in first.pretraining["sal"]
    bundle = Path(first.pretraining["sal"]["bundle"])
    second = run(1)  # another fine-tuning seed: the same pre-training serves
    assert second.pretraining["sal"]["reused"] is True
    assert Path(second.pretraining["sal"]["bundle"]) == bundle
    options = PretrainOptions(method="sal", size=32, width=4)
    settings = TrainConfig(steps=2, batch_size=2, lr=protocol.pretrain_lr, checkpoint_every=2)
    assert finished_pretraining(bundle.parent, options, settings) is not None
    longer = dataclasses.replace(settings, steps=3, checkpoint_every=3)
    assert finished_pretraining(bundle.parent, options, longer) is None
    other = dataclasses.replace(options, gp="none")
    assert finished_pretraining(bundle.parent, other, settings) is None


def test_the_test_split_refuses_case_ids_shifted_by_another_indexed_folder(tmp_path: Path):
    from salign_cli.bench.few_label import test_split_of
    from salign_cli.data.index import index_folders
    from salign_cli.train.scans import resolve_labelled_cases
    from salign_cli.workspace import Workspace

    data = write_dataset(tmp_path / "data", cases=4, test_cases=0)
    alone = Workspace(tmp_path / "alone").ensure()
    cases, _ = resolve_labelled_cases([data], alone)
    assert test_split_of(cases, 1) == [sorted(c.case_id for c in cases)[-1]]
    # the same file names in a second folder of the same workspace: the ids get prefixes
    shared = Workspace(tmp_path / "shared").ensure()
    index_folders([write_dataset(tmp_path / "copy", cases=4, test_cases=0)], shared)
    cases, _ = resolve_labelled_cases([data], shared)
    with pytest.raises(InputError, match="workspace of its own"):
        test_split_of(cases, 1)
