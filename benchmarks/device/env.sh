# Sourced by the device scripts: salign's Python environment on the GPU machine.
#
# That machine has torch (CUDA), numpy, scipy, typer, rich, safetensors, h5py, but no package
# index and not nibabel, platformdirs, httpx2 or huggingface_hub >= 2.4 (`pip install -e .`
# cannot work there). They travel as wheels in a git-ignored `.whl/` folder named in `carry`,
# fetched here with (one line per the device README's platform list):
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_17_x86_64 -d .whl nibabel platformdirs \
#       huggingface_hub httpx2 httpcore2 truststore
# (pydicom/highdicom only for DICOM work; add them when a script needs them). salign itself
# runs from the checkout. A warm machine keeps /tmp/site from an earlier call.
if [ ! -d /tmp/site ]; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "no /tmp/site and no .whl/ carried: carry .whl (see benchmarks/device/env.sh)" >&2
        exit 1
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/salign-out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
    | tee -a "$OUT/gpu.txt"
