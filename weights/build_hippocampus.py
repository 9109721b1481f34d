"""Build the hippocampus bundle that ships with salign (``--model hippocampus``), reproducibly.

    python weights/build_hippocampus.py ../shared/data/hippocampus

Two fine-tunes with salign's recipe (CPU profile, more steps: every scan is labelled here):

1. **held-out check** — trained on the 150 non-test cases (the test split is the last 50 ids,
   as everywhere in salign) and scored on those 50: the number the model card reports for the
   recipe;
2. **the shipped model** — the same recipe on all 200 cases, written to
   ``salign_cli/_weights/hippocampus/`` with a model card carrying the data's CC-BY-SA 4.0
   attribution and both numbers (its own validation Dice would be on training data, so it is not
   quoted).

Prints one JSON line with the held-out Dice, the times and the bundle's sha256.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from salign_cli.bench.few_label import fixed_test_split
from salign_cli.data.preprocess import PreprocessConfig
from salign_cli.model.bundle import build_model, load_bundle, render_card
from salign_cli.train.engine import RuntimeOptions
from salign_cli.train.finetune import (
    FinetuneOptions,
    finetune,
    load_held_out,
    resolve_labelled_cases,
    score_model,
)
from salign_cli.workspace import Workspace

SHIPPED = Path(__file__).resolve().parents[1] / "salign_cli" / "_weights" / "hippocampus"
ATTRIBUTION = """\
## Training data and licence

Trained on 200 labelled cases of the Medical Segmentation Decathlon Task04 Hippocampus
(Vanderbilt University Medical Center; release 1.0, 04/05/2018), licensed **CC-BY-SA 4.0** —
this model is shared under the same licence. Cite: Antonelli et al., *The Medical Segmentation
Decathlon*, Nat Commun 13:4128 (2022); Simpson et al., arXiv:1902.09063.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--base", default="scratch", help="scratch or a pre-training run/bundle")
    parser.add_argument("-w", "--workspace", type=Path, default=Path("/tmp/salign-build-ws"))
    parser.add_argument("--skip-check", action="store_true", help="ship without the check run")
    args = parser.parse_args()
    space = Workspace.resolve(args.workspace).ensure()
    cases, _ = resolve_labelled_cases([args.data], space)
    ids = sorted(c.case_id for c in cases)
    test = fixed_test_split(ids, 50)
    runtime = RuntimeOptions(device="cpu")
    common = {"steps": args.steps, "max_validation_cases": 0, "unlabelled": "none", "seed": 0}
    report: dict = {"steps": args.steps, "base": args.base}

    if not args.skip_check:
        started = time.perf_counter()
        check = finetune(
            [args.data],
            workspace=space,
            base=args.base,
            options=FinetuneOptions(
                case_ids=tuple(i for i in ids if i not in test),
                exclude_case_ids=tuple(test),
                **common,
            ),
            runtime=runtime,
        )
        bundle = load_bundle(check.bundle_dir)
        preprocess = PreprocessConfig.from_dict(bundle.contract.preprocessing)
        held_out = [load_held_out(c, preprocess) for c in cases if c.case_id in set(test)]
        summary = score_model(
            build_model(bundle), preprocess, held_out, check.class_names,
            inference=bundle.contract.inference_defaults,
        )  # fmt: skip
        report["held_out"] = {
            "mean": summary.overall_dice.mean,
            **{c.name: c.dice.mean for c in summary.classes},
            "cases": len(held_out),
            "train_s": round(time.perf_counter() - started),
        }
        print(json.dumps({"held_out": report["held_out"]}), flush=True)

    started = time.perf_counter()
    shipped = finetune(
        [args.data], workspace=space, base=args.base,
        options=FinetuneOptions(case_ids=tuple(ids), **common), runtime=runtime,
    )  # fmt: skip
    report["shipped_train_s"] = round(time.perf_counter() - started)
    contract = load_bundle(shipped.bundle_dir).contract
    if SHIPPED.exists():
        shutil.rmtree(SHIPPED)
    shutil.copytree(shipped.bundle_dir, SHIPPED)
    held = report.get("held_out")
    measured = (
        f"Mean Dice **{held['mean']:.3f}** on the 50 MSD Task04 cases salign holds out "
        f"(the last 50 ids), for the same recipe trained on the other 150 "
        f"({', '.join(f'{k} {v:.3f}' for k, v in held.items() if k not in ('mean', 'cases', 'train_s'))})."
        if held
        else "No held-out score was measured for this build."
    )
    # the data's licence is the card's (render_card leaves it to the publisher)
    card = render_card(contract, title="salign hippocampus (MSD Task04)").replace(
        "license: other", "license: cc-by-sa-4.0"
    )
    card += (
        f"\n## Measured\n\n{measured} The shipped weights saw all 200 cases.\n\n"
        "Ships inside salign: `salign segment scan.nii.gz --model hippocampus` needs no network."
        f"\n\n{ATTRIBUTION}"
    )
    (SHIPPED / "README.md").write_text(card, encoding="utf-8")
    report["sha256"] = contract.weights_sha256
    report["bytes"] = (SHIPPED / "model.safetensors").stat().st_size
    print(json.dumps(report))


if __name__ == "__main__":
    main()
