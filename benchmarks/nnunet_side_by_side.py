"""nnU-Net v2 and salign on the same CT volume, same cores, file to file, untrained weights.

nnU-Net lives in its own virtual environment, with the CPU torch this project uses pinned by
``benchmarks/nnunet-constraints.txt`` (so pip fetches no CUDA wheels)::

    python -m venv /tmp/nnunet-venv
    /tmp/nnunet-venv/bin/pip install torch==2.13.0
    /tmp/nnunet-venv/bin/pip install nnunetv2 -c benchmarks/nnunet-constraints.txt
    python benchmarks/nnunet_side_by_side.py --nnunet-python /tmp/nnunet-venv/bin/python

Nothing is trained. The script writes the generated CT of ``segment_speed.py`` (512 x 512 x
``--slices``, 0.8 x 0.8 x 2.5 mm) as a one-case nnU-Net raw dataset, lets nnU-Net plan it
(``nnUNetv2_extract_fingerprint`` + ``nnUNetv2_plan_experiment``: its own 2D configuration for
this volume, patch = the 512² slice), saves that network with random weights as
``fold_0/checkpoint_final.pth`` and times ``nnUNetv2_predict -c 2d -device cpu --disable_tta``
(one preprocessing and one export worker). Then it times ``salign segment`` of the same file
with a width-32 U-Net at native spacing (the same 512² input) and with the default CT recipe
(1.5 mm). Each row is one process, interpreter start included; prints a table, the ratio and,
last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's salign, not whichever one is installed
sys.path.insert(0, str(REPO / "benchmarks"))

DATASET = "Dataset999_SalignSpeed"

# Run in nnU-Net's interpreter: the planned 2D network with random weights, as a checkpoint.
_MAKE_CHECKPOINT = """
import json, sys, torch
from pathlib import Path
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
folder = Path(sys.argv[1])
plans = PlansManager(json.loads((folder / "plans.json").read_text()))
dataset_json = json.loads((folder / "dataset.json").read_text())
configuration = plans.get_configuration("2d")
network = nnUNetTrainer.build_network_architecture(
    plans, configuration,
    determine_num_input_channels(plans, configuration, dataset_json),
    plans.get_label_manager(dataset_json).num_segmentation_heads,
    enable_deep_supervision=False,
)
(folder / "fold_0").mkdir(exist_ok=True)
torch.save(
    {
        "network_weights": network.state_dict(),
        "trainer_name": "nnUNetTrainer",
        "init_args": {"configuration": "2d"},
        "inference_allowed_mirroring_axes": (0, 1),
    },
    folder / "fold_0" / "checkpoint_final.pth",
)
print(json.dumps({"patch_size": list(configuration.patch_size),
                  "parameters": sum(p.numel() for p in network.parameters())}))
"""


def _run(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{completed.stderr[-3000:]}")
    return seconds, completed.stdout


def write_dataset(raw: Path, slices: int) -> Path:
    """The generated CT as a one-case nnU-Net raw dataset; returns the image path."""
    import nibabel as nib
    import numpy as np
    from segment_speed import make_ct_volume

    images, labels = raw / DATASET / "imagesTr", raw / DATASET / "labelsTr"
    images.mkdir(parents=True)
    labels.mkdir()
    full = make_ct_volume(raw / "full.nii.gz")
    image = nib.load(full)
    array = np.asarray(image.dataobj)[:, :, :slices]
    path = images / "ct_000_0000.nii.gz"
    nib.save(nib.Nifti1Image(array, image.affine), path)
    label = (array > 60).astype(np.uint8)  # the phantom's organ (90 HU) and bone; only for planning
    nib.save(nib.Nifti1Image(label, image.affine), labels / "ct_000.nii.gz")
    full.unlink()
    (raw / DATASET / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "organ": 1},
                "numTraining": 1,
                "file_ending": ".nii.gz",
            }
        )
    )
    return path


def nnunet_rows(python: Path, work: Path, image: Path, threads: int) -> dict:
    bin_dir = python.parent
    env = {
        **os.environ,
        "nnUNet_raw": str(work / "raw"),
        "nnUNet_preprocessed": str(work / "preprocessed"),
        "nnUNet_results": str(work / "results"),
        "OMP_NUM_THREADS": str(threads),
        "nnUNet_def_n_proc": "1",
    }
    env.pop("PYTHONPATH", None)
    _run([str(bin_dir / "nnUNetv2_extract_fingerprint"), "-d", "999", "-np", "1"], env)
    _run([str(bin_dir / "nnUNetv2_plan_experiment"), "-d", "999"], env)
    model = work / "results" / DATASET / "nnUNetTrainer__nnUNetPlans__2d"
    model.mkdir(parents=True)
    shutil.copy(work / "preprocessed" / DATASET / "nnUNetPlans.json", model / "plans.json")
    shutil.copy(work / "raw" / DATASET / "dataset.json", model / "dataset.json")
    _, info = _run([str(python), "-c", _MAKE_CHECKPOINT, str(model)], env)
    inputs = work / "nnunet_in"
    inputs.mkdir()
    shutil.copy(image, inputs / image.name)
    seconds, _ = _run(
        [
            str(bin_dir / "nnUNetv2_predict"),
            *("-i", str(inputs), "-o", str(work / "nnunet_out"), "-d", "999", "-c", "2d"),
            *("-f", "0", "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"),
        ],
        env,
    )
    return {"seconds": seconds, **json.loads(info.strip().splitlines()[-1])}


def salign_seconds(image: Path, work: Path, spacing: str, threads: int) -> float:
    from segment_speed import CT_SPACING_MM, make_bundle

    from salign_cli.data.preprocess import default_target_spacing

    target = default_target_spacing([CT_SPACING_MM], "CT", spacing)
    bundle = make_bundle(work / f"bundle-{spacing}", "CT", ("background", "organ"), target)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": str(threads),
    }
    seconds, _ = _run(
        [
            sys.executable,
            *("-m", "salign_cli", "segment", str(image), "-o"),
            str(work / f"salign-{spacing}.nii.gz"),
            *("--model", str(bundle), "--device", "cpu", "--overwrite", "-q"),
        ],
        env,
    )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nnunet-python", type=Path, default=Path("/tmp/nnunet-venv/bin/python"))
    parser.add_argument("--slices", type=int, default=200, help="slices of the 512² CT (max 200)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if not (args.nnunet_python.parent / "nnUNetv2_predict").is_file():
        raise SystemExit(
            f"{args.nnunet_python}: no nnUNetv2_predict beside it; install nnU-Net as the "
            "module docstring says"
        )
    with tempfile.TemporaryDirectory(prefix="salign-nnunet-") as scratch:
        work = Path(scratch)
        image = write_dataset(work / "raw", args.slices)
        nnunet = nnunet_rows(args.nnunet_python, work, image, args.threads)
        native = salign_seconds(image, work, "native", args.threads)
        default = salign_seconds(image, work, "auto", args.threads)
    shape = f"512x512x{args.slices}"
    print(f"\nCT {shape}, 0.8 x 0.8 x 2.5 mm, CPU, {args.threads} threads, random weights\n")
    print(f"{'predictor':52} {'s':>8} {'s/slice':>8}")
    rows = [
        (f"nnU-Net v2 2d (patch {nnunet['patch_size']}, no TTA)", nnunet["seconds"]),
        ("salign, width 32, native spacing (512² slices)", native),
        ("salign, width 32, default CT recipe (1.5 mm)", default),
    ]
    for name, seconds in rows:
        print(f"{name:52} {seconds:8.1f} {seconds / args.slices:8.3f}")
    print(
        f"\nnnU-Net / salign at the same 512² input: {nnunet['seconds'] / native:.2f}x; "
        f"nnU-Net / salign's CT default: {nnunet['seconds'] / default:.2f}x"
    )
    print(
        json.dumps(
            {
                "benchmark": "nnunet_side_by_side",
                "volume": shape,
                "threads": args.threads,
                "nnunet_s": nnunet["seconds"],
                "nnunet_patch_size": nnunet["patch_size"],
                "nnunet_parameters": nnunet["parameters"],
                "salign_native_s": native,
                "salign_default_s": default,
                "ratio_same_input": nnunet["seconds"] / native,
                "ratio_default": nnunet["seconds"] / default,
            }
        )
    )


if __name__ == "__main__":
    main()
