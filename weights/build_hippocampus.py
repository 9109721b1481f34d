"""Build the hippocampus bundle that ships with salign (``--model hippocampus``), reproducibly.

    python weights/build_hippocampus.py ../shared/data/hippocampus

One fine-tune with salign's recipe (CPU profile, more steps: every training scan is labelled
here) on the 150 non-test cases, scored on the 50 it never saw (the last 50 ids, salign's test
split everywhere). That same model is the one shipped, in ``salign_cli/_weights/hippocampus/``,
so the Dice its card quotes is the shipped weights' own held-out score, not a sibling's: it is
recorded in the bundle's ``salign.json`` (``evaluation``) and the card is generated from that
contract (``write_card``), with the data's CC-BY-SA 4.0 attribution.

    python weights/build_hippocampus.py ../shared/data/hippocampus --card-only

re-scores the shipped weights (no training) and rewrites only ``evaluation`` and the card: for
a new card format. Prints one JSON line with the held-out Dice, the training time (none with
``--card-only``) and the bundle's sha256.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

from salign_cli.bench.few_label import fixed_test_split, score_bundle
from salign_cli.bundles.card import CardDataset, CardLicence, write_card
from salign_cli.bundles.files import read_contract
from salign_cli.bundles.layout import CONTRACT_FILE
from salign_cli.io.atomic import write_json
from salign_cli.metrics import EvaluationSummary
from salign_cli.train.engine import RuntimeOptions
from salign_cli.train.finetune import FinetuneOptions, finetune
from salign_cli.train.scans import resolve_labelled_cases
from salign_cli.workspace import Workspace

SHIPPED = Path(__file__).resolve().parents[1] / "salign_cli" / "_weights" / "hippocampus"
TITLE = "salign hippocampus (MSD Task04)"
DATASET = CardDataset("msd-task04-hippocampus", "MSD Task04 Hippocampus")
TEST_CASES = 50
ATTRIBUTION = """\
## Training data and licence

Trained on 150 labelled cases of the Medical Segmentation Decathlon Task04 Hippocampus
(Vanderbilt University Medical Center; release 1.0, 04/05/2018), licensed **CC-BY-SA 4.0** —
this model is shared under the same licence. Cite: Antonelli et al., *The Medical Segmentation
Decathlon*, Nat Commun 13:4128 (2022); Simpson et al., arXiv:1902.09063.
"""


def record_and_write_card(folder: Path, summary: EvaluationSummary) -> dict[str, float]:
    """Store the held-out Dice in ``folder``'s contract, then generate its card from it."""
    per_class = {c.name: c.dice.mean for c in summary.classes}
    contract = read_contract(folder)
    evaluation = {
        "per_class_dice": per_class,
        "mean_dice": summary.overall_dice.mean,
        "held_out_cases": len(summary.cases),
        "split": f"the last {TEST_CASES} MSD Task04 ids (salign's test split), never trained on",
    }
    write_json(
        folder / CONTRACT_FILE, dataclasses.replace(contract, evaluation=evaluation).to_dict()
    )
    trained_on = len(contract.finetuning["labelled_case_ids"])
    measured = (
        f"## Measured\n\nMean Dice **{summary.overall_dice.mean:.3f}** on the "
        f"{len(summary.cases)} MSD Task04 cases salign holds out (the last {TEST_CASES} ids), "
        f"which these weights never saw ({', '.join(f'{k} {v:.3f}' for k, v in per_class.items())}"
        f"); trained on the other {trained_on} cases, {contract.finetuning['steps']} steps, on CPU."
        "\n\nShips inside salign: `salign segment scan.nii.gz --model hippocampus` needs no "
        f"network.\n\n{ATTRIBUTION}"
    )
    write_card(
        folder, TITLE, licence=CardLicence("cc-by-sa-4.0"), dataset=DATASET, sections=measured
    )
    return per_class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--base", default="scratch", help="scratch or a pre-training run/bundle")
    parser.add_argument("-w", "--workspace", type=Path, default=Path("/tmp/salign-build-ws"))
    parser.add_argument(
        "--card-only", action="store_true", help="re-score the shipped weights; rewrite the card"
    )
    args = parser.parse_args()
    space = Workspace.resolve(args.workspace).ensure()
    cases, _ = resolve_labelled_cases([args.data], space)
    ids = sorted(c.case_id for c in cases)
    test = fixed_test_split(ids, TEST_CASES)
    held_out = [c for c in cases if c.case_id in set(test)]
    train_s = None
    if not args.card_only:
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
        if SHIPPED.exists():
            shutil.rmtree(SHIPPED)
        shutil.copytree(run.bundle_dir, SHIPPED)
    names = {int(k): v for k, v in read_contract(SHIPPED).classes.items() if k != "0"}
    summary = score_bundle(SHIPPED, held_out, names)
    per_class = record_and_write_card(SHIPPED, summary)
    print(json.dumps({
        "held_out": {"mean": summary.overall_dice.mean, **per_class, "cases": len(held_out)},
        "train_s": train_s, "sha256": read_contract(SHIPPED).weights_sha256,
        "bytes": (SHIPPED / "model.safetensors").stat().st_size,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
