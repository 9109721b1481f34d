#!/usr/bin/env bash
# The wheel built from this checkout is complete: installed alone (no checkout on the path, no
# network) it segments a scan with the shipped hippocampus weights. Run by .ci/run, inside an
# environment that already has salign's dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python -m pip wheel -q --no-deps . -w "$scratch/dist"
python -m pip install -q --no-deps --target "$scratch/site" "$scratch"/dist/*.whl
cd "$scratch"
export PYTHONPATH="$scratch/site" HF_HUB_OFFLINE=1 SALIGN_HOME="$scratch/workspace"
python - <<'PY'
import numpy as np, nibabel as nib, salign_cli
assert salign_cli.__file__.startswith(__import__("os").environ["PYTHONPATH"]), salign_cli.__file__
image = np.random.default_rng(0).normal(100, 20, size=(35, 50, 35)).astype(np.float32)
nib.save(nib.Nifti1Image(image, np.eye(4)), "scan.nii.gz")
PY
python -m salign_cli segment scan.nii.gz -o mask.nii.gz --model hippocampus --quiet
python -c "import nibabel as nib; assert nib.load('mask.nii.gz').shape == (35, 50, 35)"
echo "wheel check: the wheel alone segments with the shipped weights"
