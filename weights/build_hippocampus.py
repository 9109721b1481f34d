"""Build the hippocampus bundle that ships with salign (``--model hippocampus``), reproducibly.

    python weights/build_hippocampus.py ../shared/data/hippocampus

One fine-tune with salign's recipe (CPU profile, more steps: every training scan is labelled
here) on the 150 non-test cases, scored on the 50 it never saw (the last 50 ids, salign's test
split everywhere). That same model is the one shipped, in ``salign_cli/_weights/hippocampus/``,
so the Dice its card quotes is the shipped weights' own held-out score, not a sibling's; the
card carries the data's CC-BY-SA 4.0 attribution.

Prints one JSON line with the held-out Dice, the training time and the bundle's sha256.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from salign_cli.bench.few_label import fixed_test_split, score_bundle
from salign_cli.model.bundle import read_contract, render_card
from salign_cli.train.engine import RuntimeOptions
from salign_cli.train.finetune import FinetuneOptions, finetune, resolve_labelled_cases
from salign_cli.workspace import Workspace

SHIPPED = Path(__file__).resolve().parents[1] / "salign_cli" / "_weights" / "hippocampus"
ATTRIBUTION = """\
## Training data and licence

Trained on 150 labelled cases of the Medical Segmentation Decathlon Task04 Hippocampus
(Vanderbilt University Medical Center; release 1.0, 04/05/2018), licensed **CC-BY-SA 4.0** —
this model is shared under the same licence. Cite: Antonelli et al., *The Medical Segmentation
Decathlon*, Nat Commun 13:4128 (2022); Simpson et al., arXiv:1902.09063.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--base", default="scratch", help="scratch or a pre-training run/bundle")
    parser.add_argument("-w", "--workspace", type=Path, default=Path("/tmp/salign-build-ws"))
    args = parser.parse_args()
    space = Workspace.resolve(args.workspace).ensure()
    cases, _ = resolve_labelled_cases([args.data], space)
    ids = sorted(c.case_id for c in cases)
    test = fixed_test_split(ids, 50)
    started = time.perf_counter()
    run = finetune(
        [args.data],
        workspace=space,
        base=args.base,
        options=FinetuneOptions(
            case_ids=tuple(i for i in ids if i not in test),
            exclude_case_ids=tuple(test),
            steps=args.steps,
            max_validation_cases=0,
            unlabelled="none",
            seed=0,
        ),
        runtime=RuntimeOptions(device="cpu"),
    )
    train_s = round(time.perf_counter() - started)
    held_out = [c for c in cases if c.case_id in set(test)]
    summary = score_bundle(run.bundle_dir, held_out, run.class_names)
    contract = read_contract(run.bundle_dir)
    per_class = {c.name: c.dice.mean for c in summary.classes}
    if SHIPPED.exists():
        shutil.rmtree(SHIPPED)
    shutil.copytree(run.bundle_dir, SHIPPED)
    # the data's licence is the card's (render_card leaves it to the publisher)
    card = render_card(contract, title="salign hippocampus (MSD Task04)").replace(
        "license: other", "license: cc-by-sa-4.0"
    )
    card += (
        f"\n## Measured\n\nMean Dice **{summary.overall_dice.mean:.3f}** on the {len(held_out)} "
        "MSD Task04 cases salign holds out (the last 50 ids), which these weights never saw "
        f"({', '.join(f'{k} {v:.3f}' for k, v in per_class.items())}); trained on the other "
        f"{len(ids) - len(test)} cases, {args.steps} steps, in {train_s / 60:.0f} min on CPU.\n\n"
        "Ships inside salign: `salign segment scan.nii.gz --model hippocampus` needs no network."
        f"\n\n{ATTRIBUTION}"
    )
    (SHIPPED / "README.md").write_text(card, encoding="utf-8")
    print(json.dumps({
        "held_out": {"mean": summary.overall_dice.mean, **per_class, "cases": len(held_out)},
        "steps": args.steps, "train_s": train_s, "sha256": contract.weights_sha256,
        "bytes": (SHIPPED / "model.safetensors").stat().st_size,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
