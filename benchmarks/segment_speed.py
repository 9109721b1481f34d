"""File-to-file speed and peak memory of `salign segment` (issue 5's benchmark).

Cases:

- ``ct512``: a generated 512 x 512 x 200 int16 CT-like volume (0.8 x 0.8 x 2.5 mm) segmented with
  a depth-4, 2-class U-Net of the width ``salign finetune`` picks on this machine (16, the CPU
  recipe, without CUDA; 32, the GPU recipe, with it; ``--ct-width`` to choose) trained, as the
  default CT recipe does, at the median in-plane spacing floored at 1.5 mm
  (`default_target_spacing`): the network sees 200 slices of 273 x 273. Run twice: as is, and
  with ``segment --fast`` (3 mm, 137 x 137). ``--ct-spacing native`` gives the old 512² row,
  ``--ct-width 32`` a GPU-trained network on this CPU;
- ``hippocampus``: the first ``--cases`` MSD hippocampus MRI crops with a width-32, 3-class model.

Each case runs in a fresh child process (``--child``) so that peak RSS is that of one
``segment`` call: wall time from before the model is loaded to after the last mask is written
and verified, divided by the number of volumes. Weights are random (speed does not depend on
them). Targets from the issue: < 60 s for ct512 on 2 CPU cores; < 1 s on one H100/H200.

    python benchmarks/segment_speed.py                       # CPU (and CUDA when present)
    python benchmarks/segment_speed.py --threads 2 --cases 20 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's salign, not whichever one is installed
DEFAULT_HIPPOCAMPUS = REPO.parent / "shared" / "data" / "hippocampus"
CT_SHAPE = (512, 512, 200)
CT_SPACING_MM = (0.8, 0.8, 2.5)


def make_ct_volume(path: Path) -> Path:
    """An int16 CT-like phantom: air, a soft-tissue body ellipse, a bone ring, an organ."""
    import nibabel as nib

    x, y, z = np.ogrid[: CT_SHAPE[0], : CT_SHAPE[1], : CT_SHAPE[2]]
    body = ((x - 256) / 220.0) ** 2 + ((y - 256) / 170.0) ** 2 < 1
    bone = body & (((x - 256) / 200.0) ** 2 + ((y - 256) / 150.0) ** 2 > 0.85)
    organ = ((x - 300) / 60.0) ** 2 + ((y - 230) / 45.0) ** 2 + ((z - 100) / 40.0) ** 2 < 1
    volume = np.full(CT_SHAPE, -1000, dtype=np.int16)
    volume[np.broadcast_to(body, CT_SHAPE)] = 40
    volume[np.broadcast_to(bone, CT_SHAPE)] = 700
    volume[organ] = 90
    noise = np.random.default_rng(0).normal(0, 15, CT_SHAPE).astype(np.int16)
    volume += noise
    affine = np.diag([*CT_SPACING_MM, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), path)
    return path


def make_bundle(
    folder: Path,
    modality: str,
    classes: tuple[str, ...],
    target_spacing_mm: tuple[float, float] | None = None,
    width: int = 32,
) -> Path:
    from salign_cli.bundles.store import untrained_bundle
    from salign_cli.data.preprocess import PreprocessConfig
    from salign_cli.model.unet import UNetConfig

    # a depth-4 U-Net (width 32 unless told): speed does not depend on the (random) weights
    return untrained_bundle(
        folder,
        classes,
        modality=modality,
        architecture=UNetConfig(num_classes=len(classes), width=width),
        preprocessing=PreprocessConfig(modality, target_spacing_mm=target_spacing_mm),  # type: ignore[arg-type]
    )


def ct_recipe_spacing(choice: str) -> tuple[float, float] | None:
    """The in-plane spacing `salign finetune` would train a model on this CT at."""
    from salign_cli.data.preprocess import default_target_spacing

    return default_target_spacing([CT_SPACING_MM], "CT", choice)


def child(args: argparse.Namespace) -> None:
    """One segment call in this process; print timings and peak memory as JSON."""
    import torch

    from salign_cli.infer.jobs import SegmentOptions
    from salign_cli.infer.pipeline import segment

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    summary = segment(
        args.inputs,
        args.output,
        model=args.model,
        options=SegmentOptions(
            device=args.device,
            batch_size=args.batch_size or None,
            overwrite=True,
            fast=args.fast,
        ),
    )
    seconds = time.perf_counter() - start
    written = summary.by_status("written")
    failed = summary.by_status("failed")
    if failed:
        raise SystemExit(f"benchmark case failed: {failed[0].error}")
    stages = {
        stage: float(np.mean([r.seconds[stage] for r in written]))
        for stage in ("read", "predict", "write")
    }
    gpu_peak = (
        torch.cuda.max_memory_allocated() / 2**30 if summary.device.startswith("cuda") else None
    )
    print(
        json.dumps(
            {
                "device": summary.device,
                "volumes": len(written),
                "seconds": seconds,
                "seconds_per_volume": seconds / len(written),
                "stages": stages,
                "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                "gpu_peak_gib": gpu_peak,
            }
        )
    )


def run_case(
    inputs: list[Path], output: Path, model: Path, device: str, args, fast: bool = False
) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        *(["--fast"] if fast else []),
        "--model",
        str(model),
        "--output",
        str(output),
        "--device",
        device,
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads or 0),
        *map(str, inputs),
    ]
    # the child imports this checkout's salign, whatever is installed
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    completed = subprocess.run(
        command, capture_output=True, text=True, check=False, env=environment
    )
    if completed.returncode != 0:
        raise SystemExit(completed.stderr or completed.stdout)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("inputs", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu and cuda)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--batch-size", type=int, default=0, help="0: the device default")
    parser.add_argument("--cases", type=int, default=20, help="hippocampus volumes to segment")
    parser.add_argument("--hippocampus", type=Path, default=DEFAULT_HIPPOCAMPUS)
    parser.add_argument("--skip-ct512", action="store_true")
    parser.add_argument("--fast", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--ct-width",
        type=int,
        default=None,
        help="ct512 U-Net width (default: the width of the recipe `salign finetune` picks on "
        "this machine: 16 without CUDA, 32 with it)",
    )
    parser.add_argument(
        "--ct-spacing",
        default="auto",
        help="ct512 model spacing: auto (the CT default, 1.5 mm here), native or mm",
    )
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.ct_width is None:
        import torch

        from salign_cli.train.recipe import profile_for_device, recipe_for

        device_type = "cuda" if torch.cuda.is_available() else "cpu"
        args.ct_width = recipe_for(profile_for_device(device_type)).width

    import torch

    devices = (
        [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="salign-bench-") as scratch:
        work = Path(scratch)
        cases = []
        if not args.skip_ct512:
            spacing = ct_recipe_spacing(args.ct_spacing)
            ct_bundle = make_bundle(
                work / "ct-bundle", "CT", ("background", "organ"), spacing, args.ct_width
            )
            ct = [make_ct_volume(work / "ct512.nii.gz")]
            at = "native" if spacing is None else f"{spacing[0]:g} mm"
            name = f"ct512 w{args.ct_width}"
            cases.append((f"{name} @ {at}", ct, ct_bundle, False))
            if spacing is not None:
                cases.append((f"{name} --fast @ {2 * spacing[0]:g} mm", ct, ct_bundle, True))
        images = sorted((args.hippocampus / "imagesTr").glob("*.nii.gz"))[: args.cases]
        if images:
            mr_bundle = make_bundle(
                work / "mr-bundle", "MR", ("background", "anterior", "posterior")
            )
            cases.append((f"hippocampus ({len(images)} crops)", images, mr_bundle, False))
        for device in devices:
            for name, inputs, bundle, fast in cases:
                result = run_case(inputs, work / f"out-{device}", bundle, device, args, fast)
                rows.append((name, result))
    cores = args.threads or torch.get_num_threads()
    print(
        f"\nsalign segment, file to file (threads: {cores}, batch size {args.batch_size or 'device default'})\n"
    )
    header = f"{'case':32} {'device':7} {'s/volume':>9} {'read':>7} {'predict':>8} {'write':>7} {'peak RSS GiB':>13} {'GPU GiB':>8}"
    print(header)
    print("-" * len(header))
    for name, r in rows:
        gpu = f"{r['gpu_peak_gib']:.2f}" if r["gpu_peak_gib"] is not None else "-"
        print(
            f"{name:32} {r['device']:7} {r['seconds_per_volume']:9.2f} {r['stages']['read']:7.2f} "
            f"{r['stages']['predict']:8.2f} {r['stages']['write']:7.2f} {r['peak_rss_gib']:13.2f} {gpu:>8}"
        )
    print(
        "\ns/volume: wall time of the whole call (model load included) / volumes; read, predict"
        "\nand write are per-volume means of overlapping stages (read and write run in threads)."
    )
    print("nnU-Net v2 side by side: benchmarks/nnunet_side_by_side.py")
    print(
        json.dumps(
            {
                "benchmark": "segment_speed",
                "threads": cores,
                "rows": [
                    {"case": name, **{k: v for k, v in r.items() if k != "stages"}, **r["stages"]}
                    for name, r in rows
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
