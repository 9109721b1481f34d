"""LA 2018 (left-atrium LGE-MRI) as salign's second benchmark, with the literature's protocol.

    python benchmarks/la2018.py convert UAMT_DIR SCRATCH_DIR       # h5 -> NIfTI, once
    python benchmarks/la2018.py run SCRATCH_DIR --k 4 --seeds 0 -o OUT -w WS
    python benchmarks/la2018.py run SCRATCH_DIR --k 4 --validation 10 -o OUT -w WS   # choices
    python benchmarks/la2018.py run SCRATCH_DIR --methods pretrained+semi --from RUN ...  # after
                                                           # `salign pretrain` (RUN: its run folder)
    python benchmarks/la2018.py pack UAMT_DIR PACK_DIR --parts 3    # for the GPU machine
    python benchmarks/la2018.py unpack SCRATCH_DIR PACK_DIR/part-*  # there: -> convert's output

The data is UA-MT's preprocessed copy of the 2018 Atrial Segmentation Challenge (Xiong et al.,
"A global benchmark of algorithms for segmenting the left atrium from late gadolinium-enhanced
cardiac magnetic resonance imaging", Medical Image Analysis 67, 2021; first online 2020):
``data/2018LA_Seg_Training Set/<ID>/mri_norm2.h5`` with ``image`` (z-scored float32) and
``label`` (uint8), ``data/train.list`` (80 ids) and ``data/test.list`` (20 ids) of the public
repository ``yulequan/UA-MT``. No licence is stated upstream: it is used for benchmarks only,
converted into a scratch folder outside the repository, and nothing derived from it is committed.

``convert`` writes ``SCRATCH/train`` and ``SCRATCH/test`` as MSD-style folders (``imagesTr``,
``labelsTr``, ``dataset.json``); the h5 files store no geometry, so every volume gets the
0.625 mm isotropic RAS affine of the challenge's scans. h5py is needed only here (the dev
extra, for its tests), never by salign itself.

``run`` follows the semi-supervised literature (UA-MT, SS-Net, MC-Net): the labelled scans are
the first k ids of ``train.list``, every other training volume is unlabelled, and the 20 of
``test.list`` are scored with Dice, Jaccard, HD95 and ASD (mm), plus the number of connected
pieces per predicted mask. ``--validation N`` is for choosing: the last N ids of ``train.list``
are scored instead of the test volumes and are left out of the unlabelled scans, so the test
20 are never used for a choice. Prints a table and, last, one JSON line with every run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import nibabel as nib
import numpy as np

from salign_cli.infer.postprocess import connected_components, keep_largest_component
from salign_cli.io.atomic import write_json
from salign_cli.metrics.aggregate import MeanSd
from salign_cli.metrics.masks import dice, surface_distances

SPACING_MM = 0.625  # the challenge's isotropic voxel size (UA-MT's h5 files keep the grid)
CLASS_NAME = "left_atrium"
H5_PATH = "2018LA_Seg_Training Set/{case}/mri_norm2.h5"


# ---------------------------------------------------------------------------------------------
# conversion


def read_list(uamt_data: Path, name: str) -> list[str]:
    """The ids of ``train.list`` / ``test.list`` in file order (blank lines ignored)."""
    return [line.strip() for line in (uamt_data / name).read_text().splitlines() if line.strip()]


def la_affine() -> np.ndarray:
    """0.625 mm isotropic, RAS axes, origin at the first voxel."""
    return np.diag([SPACING_MM, SPACING_MM, SPACING_MM, 1.0])


def read_case(h5_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One ``mri_norm2.h5`` -> its image (float32) and label (uint8), checked to share a grid."""
    import h5py

    with h5py.File(h5_file, "r") as handle:
        image = np.asarray(handle["image"], dtype=np.float32)
        label = np.asarray(handle["label"], dtype=np.uint8)
    if image.shape != label.shape or image.ndim != 3:
        raise ValueError(f"{h5_file}: image {image.shape} and label {label.shape} differ")
    return image, label


def write_case(image: np.ndarray, label: np.ndarray, image_out: Path, label_out: Path) -> None:
    """Image and label as NIfTI on the challenge grid, each written whole or not at all."""
    for array, path in ((image, image_out), (label, label_out)):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".part.nii.gz")
        nib.save(nib.Nifti1Image(array, la_affine()), temporary)
        temporary.replace(path)


def case_paths(out: Path, split: str, case: str) -> tuple[Path, Path]:
    """Where ``convert`` and ``unpack`` put one case's image and label."""
    folder = out / split
    return folder / "imagesTr" / f"{case}.nii.gz", folder / "labelsTr" / f"{case}.nii.gz"


def write_layout(out: Path, splits: dict[str, list[str]]) -> None:
    """``splits.json`` and each split's ``dataset.json`` (the MSD description salign reads)."""
    for split, cases in splits.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        write_json(
            out / split / "dataset.json",
            {
                "name": f"LA2018-{split}",
                "description": "UA-MT's preprocessed LA 2018 (Xiong et al., MedIA 2020/2021)",
                "modality": {"0": "MRI"},
                "labels": {"0": "background", "1": CLASS_NAME},
                "numTraining": len(cases),
            },
        )
    write_json(out / "splits.json", splits)


def uamt_splits(uamt_dir: Path) -> tuple[Path, dict[str, list[str]]]:
    """UA-MT's ``data/`` folder (given it or the repository around it) and its two id lists."""
    data = uamt_dir / "data" if (uamt_dir / "data" / "train.list").is_file() else uamt_dir
    return data, {"train": read_list(data, "train.list"), "test": read_list(data, "test.list")}


def convert(uamt_dir: Path, out: Path) -> dict[str, list[str]]:
    """UA-MT's ``data/`` folder (or the repository around it) -> ``out/train`` and ``out/test``."""
    data, splits = uamt_splits(uamt_dir)
    for split, cases in splits.items():
        for case in cases:
            image_out, label_out = case_paths(out, split, case)
            if not (image_out.is_file() and label_out.is_file()):
                write_case(*read_case(data / H5_PATH.format(case=case)), image_out, label_out)
    write_layout(out, splits)
    return splits


# ---------------------------------------------------------------------------------------------
# packing, for a machine the data cannot reach whole (the GPU machine takes 64 MiB per call)

PART_NAME = "part-{index}-of-{count}.npz.xz"


def pack(uamt_dir: Path, out: Path, parts: int) -> list[Path]:
    """UA-MT's volumes as ``parts`` xz files that ``unpack`` turns into ``convert``'s output.

    UA-MT z-scored 8-bit LGE-MRI, so an image holds at most 256 distinct float32 values: their
    sorted table plus one uint8 index per voxel restores the image bit for bit, and xz makes that
    ~1.3 MB a volume (gzip'd float32 NIfTI: ~2.4 MB). An image with more values is refused, not
    rounded. Labelled-first order (the first 8 training ids, the test 20, then the rest), cut
    into consecutive parts, puts what a k <= 8 run trains on with labels and scores into the
    first part, so a short check can run on it alone.
    """
    import lzma

    data, splits = uamt_splits(uamt_dir)
    order = [("train", c) for c in splits["train"][:8]] + [("test", c) for c in splits["test"]]
    order += [("train", c) for c in splits["train"][8:]]
    per_part = math.ceil(len(order) / parts)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(parts):
        arrays: dict[str, np.ndarray] = {"splits": np.array(json.dumps(splits))}
        for split, case in order[index * per_part : (index + 1) * per_part]:
            h5_file = data / H5_PATH.format(case=case)
            image, label = read_case(h5_file)
            values, levels = np.unique(image, return_inverse=True)
            if values.size > 256:
                raise SystemExit(f"{h5_file}: {values.size} distinct intensities, not 8-bit data")
            arrays[f"{split}.{case}.values"] = values
            arrays[f"{split}.{case}.levels"] = levels.reshape(image.shape).astype(np.uint8)
            arrays[f"{split}.{case}.label"] = label
        path = out / PART_NAME.format(index=index + 1, count=parts)
        temporary = path.with_name(path.name + ".part")
        with lzma.open(temporary, "wb", preset=6) as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
        temporary.replace(path)
        written.append(path)
    return written


def unpack(part_files: Sequence[Path], out: Path) -> dict[str, int]:
    """Write the cases of the given parts as ``convert`` would; count what the folder now holds.

    Parts may arrive one call at a time: each call adds its cases, and the counts say when
    every case of ``splits.json`` is there (a run needs all of them: a missing unlabelled
    volume would silently shrink the semi-supervised pool).
    """
    import io
    import lzma

    splits: dict[str, list[str]] = {}
    for part in part_files:
        with lzma.open(part, "rb") as handle, np.load(io.BytesIO(handle.read())) as arrays:
            splits = json.loads(str(arrays["splits"]))
            for key in arrays.files:
                if not key.endswith(".values"):
                    continue
                split, case, _ = key.split(".")
                paths = case_paths(out, split, case)
                if not all(path.is_file() for path in paths):  # each was written whole
                    image = arrays[key][arrays[f"{split}.{case}.levels"]]
                    write_case(image, arrays[f"{split}.{case}.label"], *paths)
    write_layout(out, splits)
    return {
        split: sum(all(p.is_file() for p in case_paths(out, split, c)) for c in cases)
        for split, cases in splits.items()
    }


# ---------------------------------------------------------------------------------------------
# scoring


@dataclass(frozen=True)
class CaseScore:
    """The community's four numbers for one case, plus how many pieces the mask is in."""

    case: str
    dice: float
    jaccard: float
    hd95_mm: float
    asd_mm: float
    pieces: int


def score_case(case: str, prediction: np.ndarray, reference: np.ndarray) -> CaseScore:
    """Dice, Jaccard, HD95 and ASD (mm) of the foreground, and its number of 3D components.

    As the literature's tables compute them (UA-MT's ``test_util`` with medpy): ASD is the mean
    distance from the predicted surface to the reference surface (medpy's one-directional
    ``asd``), HD95 the larger of the two directional 95th percentiles; both in mm here (the
    literature's medpy calls pass no spacing, so its numbers are voxels: divide ours by 0.625).
    Empty masks give NaN distances.
    """
    pred, ref = prediction > 0, reference > 0
    d = dice(pred, ref)
    jaccard = d / (2 - d) if math.isfinite(d) else math.nan
    if pred.any() and ref.any():
        pred_to_ref, ref_to_pred = surface_distances(pred, ref, (SPACING_MM,) * 3)
        hd95 = float(max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95)))
        asd = float(pred_to_ref.mean())
    else:
        hd95 = asd = math.nan
    return CaseScore(case, d, jaccard, hd95, asd, connected_components(pred)[1])


# ---------------------------------------------------------------------------------------------
# the protocol


# The part of a method after "+": how the unlabelled training volumes are used.
SEMI_OF_METHOD = {"": "none", "semi": "fixmatch", "bcp": "bcp"}


def run_one(
    data: Path,
    workspace: Path,
    output: Path,
    *,
    method: str,
    k: int,
    seed: int,
    validation: int,
    overrides: dict[str, object],
    pretrained: str | None = None,
) -> dict[str, object]:
    """Fine-tune on the first k training ids and score the test (or validation) volumes.

    A method's first part is ``scratch`` or, with ``pretrained`` (a bundle or run folder of
    `salign pretrain`), ``pretrained``: the network starts from that bundle.
    """
    from salign_cli.infer.predictor import Predictor, segment_volume
    from salign_cli.io.volume import label_values, read_volume
    from salign_cli.train.finetune import finetune
    from salign_cli.train.finetune_setup import SCRATCH, FinetuneOptions

    splits = json.loads((data / "splits.json").read_text())
    train_ids: list[str] = splits["train"]
    labelled = train_ids[:k]
    scored = train_ids[-validation:] if validation else splits["test"]
    scored_folder = data / ("train" if validation else "test")
    base, _, unlabelled_use = method.partition("+")
    semi = SEMI_OF_METHOD.get(unlabelled_use)
    start = {"scratch": SCRATCH, "pretrained": pretrained}.get(base)
    if start is None or semi is None:
        raise SystemExit(
            f"method {method!r}: scratch or pretrained (with --from), then nothing, +semi "
            "(FixMatch) or +bcp"
        )
    started = time.perf_counter()
    result = finetune(
        [data / "train"],
        workspace=workspace,
        base=start,
        options=FinetuneOptions(
            case_ids=tuple(labelled),
            exclude_case_ids=tuple(scored) if validation else (),
            seed=seed,
            semi=semi,
            max_validation_cases=0,
            **overrides,  # type: ignore[arg-type]
        ),
        run_dir=output / f"finetune-{method}-k{k}-s{seed}",
    )
    finetune_s = time.perf_counter() - started
    predictor = Predictor.from_bundle(str(result.bundle_dir))
    scores, scores_largest = [], []  # as the bundle says; and with the largest part kept
    started = time.perf_counter()
    for case in scored:
        volume = read_volume(scored_folder / "imagesTr" / f"{case}.nii.gz")
        reference = label_values(read_volume(scored_folder / "labelsTr" / f"{case}.nii.gz"))
        labels = segment_volume(
            predictor, volume, largest_component=predictor.largest_component()
        ).labels
        scores.append(score_case(case, labels, reference))
        largest = keep_largest_component(labels, [1])
        scores_largest.append(score_case(case, largest, reference))
    segment_s = time.perf_counter() - started
    plan = result.report.get("plan")
    return {
        "method": method,
        "k": k,
        "seed": seed,
        "scored_on": f"validation (last {validation} of train.list)" if validation else "test",
        "labelled": labelled,
        "pretrained": pretrained,
        "finetune_s": round(finetune_s, 1),
        "segment_s_per_case": round(segment_s / len(scored), 2),
        "plan": plan,
        "summary": summarise(scores),
        "summary_largest_component": summarise(scores_largest),
        "cases": [score.__dict__ for score in scores],
        "bundle": str(result.bundle_dir),
    }


def summarise(scores: Sequence[CaseScore]) -> dict[str, float]:
    """Mean (and sd) over cases of each metric; the median number of pieces."""
    summary: dict[str, float] = {}
    for metric in ("dice", "jaccard", "hd95_mm", "asd_mm"):
        values = MeanSd.of(getattr(s, metric) for s in scores)
        summary[metric] = values.mean
        summary[f"{metric}_sd"] = values.sd
    summary["pieces_median"] = float(np.median([s.pieces for s in scores]))
    summary["pieces_max"] = float(max(s.pieces for s in scores))
    return summary


def environment() -> dict[str, str]:
    import torch

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "commit": commit,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    to_nifti = commands.add_parser("convert", help="UA-MT's h5 files -> NIfTI in a scratch folder")
    to_nifti.add_argument("uamt", type=Path)
    to_nifti.add_argument("out", type=Path)
    packing = commands.add_parser("pack", help="UA-MT's h5 files -> N xz parts (8-bit, lossless)")
    packing.add_argument("uamt", type=Path)
    packing.add_argument("out", type=Path)
    packing.add_argument("--parts", type=int, default=3)
    unpacking = commands.add_parser("unpack", help="parts -> convert's NIfTI folders")
    unpacking.add_argument("out", type=Path)
    unpacking.add_argument("parts", type=Path, nargs="+")
    bench = commands.add_parser("run", help="fine-tune on the first k ids, score test volumes")
    bench.add_argument("data", type=Path, help="the folder `convert` wrote")
    bench.add_argument("--methods", default="scratch+semi", help="comma-separated")
    bench.add_argument("--k", default="4", help="e.g. 4,8")
    bench.add_argument("--seeds", default="0", help="e.g. 0,1")
    bench.add_argument("--validation", type=int, default=0, help="score the last N train ids")
    bench.add_argument("--set", action="append", default=[], help="FinetuneOptions field=json")
    bench.add_argument(
        "--recipe-set",
        action="append",
        default=[],
        help='field=json of the CPU FinetuneRecipe (e.g. lr=0.003, semi={"threshold": 0.9}); '
        "the plan still applies",
    )
    bench.add_argument(
        "--from",
        dest="pretrained",
        help="bundle or run folder of `salign pretrain` that the pretrained methods start from",
    )
    bench.add_argument("-o", "--output", type=Path, required=True)
    bench.add_argument("-w", "--workspace", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "convert":
        splits = convert(args.uamt, args.out)
        print(json.dumps({"train": len(splits["train"]), "test": len(splits["test"])}))
        return
    if args.command == "pack":
        for path in pack(args.uamt, args.out, args.parts):
            print(f"{path}  {path.stat().st_size / 1e6:.1f} MB")
        return
    if args.command == "unpack":
        print(json.dumps(unpack(args.parts, args.out)))
        return
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = json.loads(value)
    if args.recipe_set:
        from salign_cli.train.recipe import CPU_RECIPE, FinetuneRecipe

        payload = CPU_RECIPE.to_dict()
        for item in args.recipe_set:
            name, _, text = item.partition("=")
            value = json.loads(text)
            if isinstance(value, dict) and isinstance(payload.get(name), dict):
                payload[name].update(value)  # e.g. semi={"threshold": 0.9}: one field of it
            else:
                payload[name] = value
        overrides["recipe"] = FinetuneRecipe.from_dict(payload)
    runs = []
    args.output.mkdir(parents=True, exist_ok=True)
    for method in args.methods.split(","):
        for k in (int(v) for v in args.k.split(",")):
            for seed in (int(v) for v in args.seeds.split(",")):
                run = run_one(
                    args.data,
                    args.workspace,
                    args.output,
                    method=method,
                    k=k,
                    seed=seed,
                    validation=args.validation,
                    overrides=overrides,
                    pretrained=args.pretrained,
                )
                runs.append(run)
                write_json(args.output / "results.json", {"env": environment(), "runs": runs})
                s = run["summary"]
                assert isinstance(s, dict)
                print(
                    f"| {method} | {k} | {seed} | {s['dice']:.3f} | {s['jaccard']:.3f} | "
                    f"{s['hd95_mm']:.2f} | {s['asd_mm']:.2f} | {s['pieces_median']:.0f} | "
                    f"{run['finetune_s']:.0f} s |",
                    flush=True,
                )
    print(json.dumps({"env": environment(), "runs": [{**r, "cases": None} for r in runs]}))


if __name__ == "__main__":
    main()
