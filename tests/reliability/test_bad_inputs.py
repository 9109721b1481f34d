"""Every kind of bad input through every command that reads scans: exit code, one clear line
naming the file, no traceback, no partial output. The table below is the contract that
``docs/reference/reliability.md`` documents.

``pretrain`` runs with ``--method scratch``: it indexes, reads and caches every scan exactly as
training does, then writes an untrained bundle (training itself is covered by the fault tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import partial_files
from corpus import BUILDERS, BadCase

from salign_cli.data.index import load_index

COMMANDS = ("index", "pretrain", "finetune", "segment", "evaluate")
OK = (0, None)  # accepted: the input is valid (if odd) and the command does its work


def _all(exit_code: int, fragment: str) -> dict[str, tuple[int, str | None]]:
    """An unreadable file: index and evaluate refuse it, training skips it, segment fails it."""
    return {
        "index": (2, fragment),
        "pretrain": (0, fragment),
        "finetune": (0, fragment),
        "segment": (exit_code, fragment),
        "evaluate": (2, fragment),
    }


def _label(fragment: str, evaluate: tuple[int, str | None]) -> dict[str, tuple[int, str | None]]:
    """A bad label: index refuses it, training skips the case, segment (images only) is fine."""
    return {
        "index": (2, fragment),
        "pretrain": (0, fragment),
        "finetune": (0, fragment),
        "segment": OK,
        "evaluate": evaluate,
    }


# kind -> command -> (exit code, text on the line that names the offender; None: no line needed)
# exit 0 with a fragment means "skipped with a warning naming the file".
EXPECTED: dict[str, dict[str, tuple[int, str | None]]] = {
    "truncated gzip": _all(2, "re-copy"),
    "not a NIfTI": _all(2, "cannot read this scan"),
    "zero bytes": _all(2, "empty file (0 bytes)"),
    "2D image": {
        "index": (2, "2D image"),
        "pretrain": (0, "2D image"),
        "finetune": (0, "2D image"),
        "segment": OK,  # a 2D image gets a 2D mask (tests/infer)
        "evaluate": OK,
    },
    "4D image": _all(2, "split it into 3D files"),
    "NaN/Inf voxels": {
        "index": OK,  # headers only; `salign index --stats` reads voxels and reports it
        "pretrain": (2, "NaN or infinite"),
        "finetune": (2, "NaN or infinite"),
        "segment": (2, "NaN or infinite"),
        "evaluate": (2, "whole numbers"),
    },
    "constant image": dict.fromkeys(COMMANDS, OK),
    "label of another shape": _label("label shape", (2, "not on the grid")),
    "label with another affine": _label("label affine", (2, "not on the grid")),
    "fractional float label": _label("non-integer", (2, "whole numbers")),
    "label outside the classes": _label("not among dataset.json labels", OK),
    "non-orthonormal directions": dict.fromkeys(COMMANDS, OK),
    "directory named x.nii.gz": {
        **_all(2, "is a folder, not a scan file"),
        "evaluate": (0, "without a prediction"),  # names the label left without a prediction
    },
    "unreadable file": _all(2, "permission denied"),
    "enormous declared size": _all(2, "implausibly large"),
    "duplicate case names": {
        "index": OK,  # case ids get their folder as prefix (tests/data)
        "pretrain": OK,
        "finetune": OK,
        "segment": (2, "would both write"),
        "evaluate": (2, "second prediction"),
    },
    "symlink loop": dict.fromkeys(COMMANDS, OK),
}

TINY_TRAINING = ("--size", "16", "--width", "4", "--device", "cpu", "--batch-size", "1", "-q")


def _arguments(command: str, case: BadCase, workspace: Path, bundle: Path) -> list[str]:
    folders = [str(folder) for folder in case.folders]
    if command == "index":
        return ["index", *folders, "-w", str(workspace)]
    if command == "pretrain":
        return ["pretrain", *folders, "--method", "scratch", "--steps", "1", *TINY_TRAINING,
                "-w", str(workspace)]  # fmt: skip
    if command == "finetune":
        data = [part for folder in folders for part in ("--data", folder)]
        return ["finetune", "--labels", "1", "--from", "scratch", *data, "--steps", "1",
                *TINY_TRAINING, "-w", str(workspace)]  # fmt: skip
    if command == "segment":
        return ["segment", *map(str, case.scans), "--model", str(bundle), "--device", "cpu",
                *case.segment_options]  # fmt: skip
    return ["evaluate", str(case.predictions), str(case.references),
            "-o", str(workspace / "summary.json")]  # fmt: skip


def test_every_kind_has_an_expectation_for_every_command() -> None:
    assert len(BUILDERS) >= 15 and set(EXPECTED) == set(BUILDERS)
    assert all(set(row) == set(COMMANDS) for row in EXPECTED.values())


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_bad_input(kind, command, cli, tmp_path, tiny_bundle, make_unreadable) -> None:
    case = BUILDERS[kind](tmp_path / "case")
    make_unreadable(case.unreadable)
    workspace = tmp_path / "workspace"
    exit_code, fragment = EXPECTED[kind][command]

    result = cli(*_arguments(command, case, workspace, tiny_bundle))

    assert result.exit_code == exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    if fragment is not None:
        offender = case.evaluate_offender if command == "evaluate" else case.offender
        # evaluate's list of labels without a prediction names files, not paths
        by_name = kind == "directory named x.nii.gz" and command == "evaluate"
        named = offender.name if by_name else str(offender)
        lines = [line for line in result.output.splitlines() if named in line]
        assert any(fragment in line for line in lines), result.output
        if exit_code == 0:
            assert any(line.startswith("warning:") for line in lines), result.output
    assert partial_files(tmp_path) == []
    _check_outputs(command, tmp_path, exit_code)


def _check_outputs(command: str, root: Path, exit_code: int) -> None:
    """What a command leaves behind: good scans still indexed, no mask or summary on failure."""
    workspace = root / "workspace"
    if command == "index":
        usable = [record.case_id for record in load_index(workspace) if record.is_usable]
        assert any(case_id.endswith("good_0") for case_id in usable)
    elif command in ("pretrain", "finetune") and exit_code == 0:
        assert list((workspace / "runs").glob(f"{command}-*/bundle/model.safetensors"))
    elif command == "segment" and exit_code != 0:
        masks = [path.name for path in root.rglob("*_seg.nii.gz")]
        assert not [name for name in masks if name.startswith(("bad", "dup"))]
    elif command == "evaluate":
        summary = workspace / "summary.json"
        assert summary.is_file() == (exit_code == 0)
        assert exit_code != 0 or json.loads(summary.read_text())["n_cases"] >= 2
