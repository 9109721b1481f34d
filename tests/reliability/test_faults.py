"""Faults: kill -9 mid-training and mid-batch, corrupt checkpoints and cache entries, a full disk,
and two processes on one batch. Nothing is lost, nothing is half-written, every error is clear.

Processes are real (``python -m salign_cli``) wherever a signal, a resource limit or a second
process is the point; the rest runs the CLI in-process.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, partial_files, run_salign, start_salign
from corpus import good_image, write_dataset
from nifti import write_nifti
from safetensors.numpy import load_file

from salign_cli.io.naming import MASK_SUFFIX

TRAIN = ("--size", "16", "--width", "4", "--device", "cpu", "--batch-size", "2", "-q")


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout_s: float = 120):
    """Poll until ``condition`` holds; fail with the process's output if it ends first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            stdout, stderr = process.communicate()
            pytest.fail(f"process ended (exit {process.returncode}) first:\n{stdout}\n{stderr}")
        assert time.monotonic() < deadline, "timed out waiting for the process"
        time.sleep(0.02)


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


def _assert_same_weights(first: Path, second: Path) -> None:
    a, b = load_file(str(first)), load_file(str(second))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-5, err_msg=name)


def _logged_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if line.strip()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("faults"), cases=3)


# ---------------------------------------------------------------------------------------------
# training: kill -9, then --resume


@pytest.mark.slow
def test_kill_during_pretraining_then_resume_equals_an_uninterrupted_run(dataset, tmp_path):
    args = ("pretrain", str(dataset), "--steps", "24", "--checkpoint-every", "3", *TRAIN)
    reference = run_salign(*args, "-w", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr

    workspace = tmp_path / "killed"
    process = start_salign(*args, "-w", str(workspace))
    _wait_for(
        lambda: any(workspace.glob("runs/pretrain-*/checkpoints/step-00000006.json")), process
    )
    _kill(process)
    (run_dir,) = (workspace / "runs").iterdir()
    assert not (run_dir / "bundle").exists(), "killed too late: the run had finished"

    resumed = run_salign("pretrain", "--resume-from", str(run_dir), "-w", str(workspace), "-q")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((run_dir / "report.json").read_text())
    assert 6 <= report["resumed_from_step"] < 24 and report["steps"] == 24
    (reference_run,) = (tmp_path / "reference" / "runs").iterdir()
    _assert_same_weights(
        reference_run / "bundle" / "model.safetensors", run_dir / "bundle" / "model.safetensors"
    )
    assert _logged_steps(run_dir) == _logged_steps(reference_run)  # each step logged once
    assert partial_files(tmp_path) == []


FINETUNE_SCRIPT = """
import sys
from pathlib import Path
from salign_cli.train.engine import RuntimeOptions
from salign_cli.train.finetune import finetune
from salign_cli.train.finetune_setup import FinetuneOptions
options = FinetuneOptions(labels=1, steps=24, batch_size=2, size=16, width=4, checkpoint_every=3,
                          max_validation_cases=1)
finetune([Path(sys.argv[1])], workspace=Path(sys.argv[2]), base="scratch", options=options,
         runtime=RuntimeOptions(device="cpu"))
"""


def _start_finetune(data: Path, workspace: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", FINETUNE_SCRIPT, str(data), str(workspace)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
    )  # fmt: skip


@pytest.mark.slow
def test_kill_during_finetuning_then_resume_equals_an_uninterrupted_run(dataset, tmp_path):
    reference = _start_finetune(dataset, tmp_path / "reference")
    _, stderr = reference.communicate(timeout=180)
    assert reference.returncode == 0, stderr

    workspace = tmp_path / "killed"
    process = _start_finetune(dataset, workspace)
    _wait_for(
        lambda: any(workspace.glob("runs/finetune-*/checkpoints/step-00000006.json")), process
    )
    _kill(process)
    (run_dir,) = (workspace / "runs").iterdir()
    assert not (run_dir / "bundle").exists(), "killed too late: the run had finished"

    resumed = run_salign("finetune", "--resume", "-w", str(workspace), "--device", "cpu", "-q")
    assert resumed.returncode == 0, resumed.stderr
    (reference_run,) = (tmp_path / "reference" / "runs").iterdir()
    _assert_same_weights(
        reference_run / "bundle" / "model.safetensors", run_dir / "bundle" / "model.safetensors"
    )
    assert _logged_steps(run_dir) == _logged_steps(reference_run)
    assert partial_files(tmp_path) == []


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory) -> Path:
    """A 4-step pre-training workspace with checkpoints at steps 2 and 4 (trained once)."""
    from typer.testing import CliRunner

    from salign_cli.cli.app import app

    workspace = tmp_path_factory.mktemp("finished") / "ws"
    args = ["pretrain", str(dataset), "--steps", "4", "--checkpoint-every", "2", *TRAIN]
    result = CliRunner().invoke(app, [*args, "-w", str(workspace)])
    assert result.exit_code == 0, result.output
    return workspace


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "delete"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(
    cli, finished_run, tmp_path, damage
):
    workspace = shutil.copytree(finished_run, tmp_path / "ws")
    (run_dir,) = (workspace / "runs").iterdir()
    final = run_dir / "bundle" / "model.safetensors"
    uninterrupted = final.rename(tmp_path / "uninterrupted.safetensors")
    newest = run_dir / "checkpoints" / "step-00000004.safetensors"
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "flip a byte":
        newest.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        newest.unlink()

    result = cli("pretrain", "--resume-from", str(run_dir), "-w", str(workspace))

    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if str(newest) in line]
    assert warnings and warnings[0].startswith("warning:") and "previous checkpoint" in warnings[0]
    assert json.loads((run_dir / "report.json").read_text())["resumed_from_step"] == 2
    _assert_same_weights(uninterrupted, final)


def test_corrupt_cache_entries_are_rebuilt(cli, dataset, tmp_path):
    workspace = tmp_path / "ws"
    args = ("pretrain", str(dataset), "--method", "scratch", *TRAIN, "-w", str(workspace))
    assert cli(*args).exit_code == 0
    entries = sorted((workspace / "cache").glob("*.npy"))
    assert len(entries) == 3
    originals = [np.load(entry) for entry in entries]
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # truncated
    entries[1].write_bytes(b"\0" * entries[1].stat().st_size)  # zero-filled (crash on ext4)
    entries[2].with_suffix(".json").write_text("{not json")  # damaged sidecar

    result = cli(*args)

    assert result.exit_code == 0, result.output
    for entry, original in zip(entries, originals, strict=True):
        np.testing.assert_array_equal(np.load(entry), original)


# ---------------------------------------------------------------------------------------------
# segment: kill -9 mid-batch, full disk, two processes


def _scan_folder(root: Path, count: int, shape=(8, 8, 4)) -> Path:
    for index in range(count):
        write_nifti(root / f"scan_{index:03d}.nii.gz", good_image(index, shape))
    return root


def _masks(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{MASK_SUFFIX}.nii.gz"))


def _assert_complete_masks(folder: Path, shape=(8, 8, 4)) -> None:
    for mask in _masks(folder):
        assert nib.load(mask).get_fdata().shape == shape, mask  # decodes every byte


@pytest.mark.slow
def test_kill_during_segment_leaves_no_partial_mask_and_the_rerun_finishes(tiny_bundle, tmp_path):
    scans = _scan_folder(tmp_path / "scans", 60, shape=(32, 32, 16))
    args = ("segment", str(scans), "--model", str(tiny_bundle), "--device", "cpu", "-q")
    process = start_salign(*args)
    _wait_for(lambda: len(_masks(scans)) >= 3, process)
    _kill(process)
    done = _masks(scans)
    assert 3 <= len(done) < 60, "killed too late: the batch had finished"
    _assert_complete_masks(scans, (32, 32, 16))

    rerun = run_salign(*args, "--report", str(tmp_path / "report.json"))

    assert rerun.returncode == 0, rerun.stderr
    results = json.loads((tmp_path / "report.json").read_text())["files"]
    assert sum(r["status"] == "skipped" for r in results) == len(done)
    assert sum(r["status"] == "written" for r in results) == 60 - len(done)
    _assert_complete_masks(scans, (32, 32, 16))
    # an interrupted write may leave its hidden temporary file; no command ever reads it
    for leftover in partial_files(scans):
        assert leftover.name.startswith(".")


def _limit_file_size(limit_bytes: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_a_full_disk_is_a_clear_error_and_leaves_no_partial_file(tiny_bundle, tmp_path):
    """``RLIMIT_FSIZE`` makes writes beyond 2 KiB fail with EFBIG, as a full disk fails them."""
    scans = _scan_folder(tmp_path / "scans", 1, shape=(64, 64, 16))
    process = start_salign(
        "segment", str(scans), "--model", str(tiny_bundle), "--device", "cpu",
        preexec_fn=_limit_file_size(2048),
    )  # fmt: skip
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 2, stdout + stderr
    output = stdout + stderr
    assert "Traceback" not in output
    failures = [line for line in output.splitlines() if "scan_000_seg.nii.gz" in line]
    assert failures and all("cannot write" in line for line in failures), output
    assert "free" in failures[0]  # the remedy: free space (or write elsewhere)
    assert _masks(scans) == [] and partial_files(tmp_path) == []


@pytest.mark.slow
def test_two_segment_processes_on_one_batch_do_not_corrupt_each_other(tiny_bundle, tmp_path):
    scans = _scan_folder(tmp_path / "scans", 40)
    args = ("segment", str(scans), "--model", str(tiny_bundle), "--device", "cpu", "-q")
    processes = [start_salign(*args) for _ in range(2)]
    outputs = [process.communicate(timeout=180) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    assert len(_masks(scans)) == 40
    _assert_complete_masks(scans)
    assert partial_files(tmp_path) == []


@pytest.mark.slow
def test_two_index_processes_into_one_workspace_keep_every_row(tmp_path):
    # 200 scans in one folder and 60 in another, indexed at the same time: before the merge
    # under the write lock, the slower process replaced the table with its own view and a
    # re-run then found one folder's scans "new" again
    from salign_cli.data.index import index_folders, load_index
    from salign_cli.workspace import Workspace

    folders = {"many": 200, "few": 60}
    for name, count in folders.items():
        for k in range(count):
            write_nifti(tmp_path / name / f"{name}_{k:03d}.nii.gz", good_image(k, (12, 12, 6)))
    workspace = tmp_path / "ws"
    command = [sys.executable, "-m", "salign_cli", "index", "-w", str(workspace)]
    processes = [
        subprocess.Popen([*command, str(tmp_path / name)], stdout=subprocess.DEVNULL)
        for name in folders
    ]
    assert [p.wait(timeout=300) for p in processes] == [0, 0]
    records = load_index(Workspace(workspace))
    assert len(records) == 260
    assert len({r.case_id for r in records}) == 260
    again = index_folders([tmp_path / "many", tmp_path / "few"], Workspace(workspace))
    assert (again.new, again.unchanged) == (0, 260)
