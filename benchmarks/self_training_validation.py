"""One round of self-training on top of a validation fine-tune: do 3D pseudo-labels add Dice?

    python benchmarks/finetune_validation.py ../shared/data/hippocampus --k 5 --semi fixmatch
    python benchmarks/self_training_validation.py ../shared/data/hippocampus RUN -o /tmp/st

RUN is the teacher: a run folder written by ``finetune_validation.py``. Its unlabelled scans
(every scan that is neither one of its labelled, validation nor excluded test cases) are
segmented with the teacher's bundle and its inference defaults (TTA, largest component) — whole
3D masks, cleaner than the per-slice pseudo-labels FixMatch learns from — and a student is
fine-tuned from scratch, supervised, on the teacher's labelled scans plus those pseudo-labelled
ones, then scored on the teacher's validation scans (the classic noisy-student round, as
ST++ and nnU-Net users do it by hand). The dataset is built under ``-o`` from symlinks: the
images and true labels are never copied, and the test split is never linked. Prints one JSON
line with both Dice values.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from salign_cli.infer.jobs import SegmentOptions
from salign_cli.infer.pipeline import segment
from salign_cli.io.naming import MASK_SUFFIX, case_name
from salign_cli.train.engine import RuntimeOptions
from salign_cli.train.finetune import finetune
from salign_cli.train.finetune_setup import FinetuneOptions
from salign_cli.workspace import Workspace

SUFFIX = ".nii.gz"  # every file this script links is named <case>.nii.gz (MSD layout)


def link(target: Path, name: Path) -> None:
    name.parent.mkdir(parents=True, exist_ok=True)
    if not name.is_symlink():
        name.symlink_to(target.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="MSD-layout dataset (imagesTr/, labelsTr/)")
    parser.add_argument("teacher", type=Path, help="run folder of finetune_validation.py")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--steps", type=int, help="student steps (default: the CPU profile's)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    report = json.loads((args.teacher / "report.json").read_text())
    labelled = set(report["labelled_case_ids"])
    validation = set(report["validation_case_ids"])
    used = labelled | validation | set(report["excluded_case_ids"])
    out, started = args.output.resolve(), time.perf_counter()
    space = Workspace.resolve(out / "workspace").ensure()
    # named as the index names the cases of one dataset folder (the teacher's report ids);
    # not indexed into this workspace, where the links' same names would be disambiguated
    images = {case_name(p): p for p in (args.data / "imagesTr").glob(f"*{SUFFIX}")}
    unlabelled = sorted(set(images) - used)
    data = out / "data"
    for case in sorted(labelled | validation):  # true labels: teacher's labelled + validation
        link(images[case], data / "imagesTr" / f"{case}{SUFFIX}")
        link(args.data / "labelsTr" / f"{case}{SUFFIX}", data / "labelsTr" / f"{case}{SUFFIX}")
    for case in unlabelled:
        link(images[case], out / "unlabelled" / f"{case}{SUFFIX}")
        link(images[case], data / "imagesTr" / f"{case}{SUFFIX}")
    segment(
        [out / "unlabelled"],
        out / "pseudo",
        model=str(args.teacher / "bundle"),
        workspace=space,
        options=SegmentOptions(device=args.device),
    )
    for case in unlabelled:
        mask = out / "pseudo" / f"{case}{MASK_SUFFIX}{SUFFIX}"
        link(mask, data / "labelsTr" / f"{case}{SUFFIX}")
    link(args.data / "dataset.json", data / "dataset.json")  # the class names
    result = finetune(
        [data],
        workspace=space,
        base="scratch",
        options=FinetuneOptions(
            case_ids=tuple(sorted(labelled | set(unlabelled))),
            seed=report["seed"],
            profile="cpu",
            steps=args.steps,
            semi="none",
            max_validation_cases=len(validation),
        ),
        runtime=RuntimeOptions(device=args.device),
    )
    assert result.validation is not None and set(result.validation_case_ids) == validation
    print(
        json.dumps(
            {
                "teacher": str(args.teacher),
                "teacher_dice": round(report["validation"]["overall"]["dice"]["mean"], 4),
                "student_dice": round(result.validation.overall_dice.mean, 4),
                "per_class": {c.name: round(c.dice.mean, 4) for c in result.validation.classes},
                "pseudo_labelled": len(unlabelled),
                "seconds": round(time.perf_counter() - started),
                "run": str(result.run_dir),
            }
        )
    )


if __name__ == "__main__":
    main()
