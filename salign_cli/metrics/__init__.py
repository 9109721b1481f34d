"""Segmentation metrics, torch-free: pure functions on masks, one case, many cases, two folders.

Shaped like nnU-Net's ``evaluation/evaluate_predictions.py``, one module a step:

- :mod:`salign_cli.metrics.masks`: confusion counts per class (:func:`~.masks.confusion_counts`)
  → metrics on boolean masks (:func:`~.masks.dice_from_counts`, :func:`~.masks.hd95`,
  :func:`~.masks.nsd`), and the one empty-mask rule (:data:`~.masks.EMPTY_MASK_RULE`);
- :mod:`salign_cli.metrics.cases`: one case's per-class results, scored from two label arrays
  (:func:`~.cases.score_arrays`) or two files (:func:`~.cases.evaluate_case`);
- :mod:`salign_cli.metrics.aggregate`: mean ± sd over cases (:class:`~.aggregate.MeanSd`,
  :func:`~.aggregate.summarise` → :class:`~.aggregate.EvaluationSummary`);
- :mod:`salign_cli.metrics.pairing`: prediction files matched to reference files by case name
  (:func:`~.pairing.match_cases`);
- :mod:`salign_cli.metrics.folders`: the folder evaluator and its JSON summary
  (:func:`~.folders.evaluate_folders` → :func:`~.folders.write_summary`).

Each step imports only the ones above it. Import names from the module that defines them; this
package re-exports nothing.
"""
