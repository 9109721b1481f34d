#!/usr/bin/env bash
# LA 2018 on one GPU with the GPU defaults (issue 26), for the device tool.
#
# The 100 volumes do not fit one call's 64 MiB, so they travel as three parts over three calls
# to the same warm machine (it stays warm ~30 s after a call: issue the next one at once):
#   here:   python benchmarks/la2018.py pack UAMT_DIR /work/scratch/lapack --parts 3   # 8-bit, lossless
#           ln -s /work/scratch/lapack .device-la     # outside the repository; .git/info/exclude'd
#           .whl/ as benchmarks/device/env.sh says (4.3 MB; without pydicom/highdicom, which
#               only DICOM needs, part 1's call stays under 64 MiB)
#   device: run(command="bash benchmarks/device/la2018.sh smoke",
#               carry=[".whl", ".device-la/part-1-of-3.npz.xz"])    # k=4, 30 steps: it works
#           run(command="bash benchmarks/device/la2018.sh part", carry=[".device-la/part-2-of-3.npz.xz"])
#           run(command="bash benchmarks/device/la2018.sh run", carry=[".device-la/part-3-of-3.npz.xz"],
#               timeout_s=540)
# Each call unpacks the parts it brought into /tmp/la2018 (kept while the machine is warm); `run`
# needs all 100 volumes and runs k = 4 and 8 for each of SEEDS (default "0": ~7 min on one
# H200, 2026-12-04; a warm machine's next call `SEEDS=1 ... run`, no carry, adds seed 1),
# rewriting results.json after every run, so what finished comes back even on a timeout.
# Tables and logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
DATA=/tmp/la2018
SEEDS="${SEEDS:-0}"
# shellcheck source=benchmarks/device/env.sh
source benchmarks/device/env.sh
shopt -s nullglob
parts=(.device-la/part-*.npz.xz)
if [ ${#parts[@]} -gt 0 ]; then
    python3 benchmarks/la2018.py unpack "$DATA" "${parts[@]}" | tee "$OUT/unpacked.json" || exit 1
fi
case "${1:-run}" in
    part) ;;
    smoke)
        timeout 240 python3 benchmarks/la2018.py run "$DATA" --k 4 --seeds 0 --set steps=30 \
            -o /tmp/la-smoke -w /tmp/la-ws 2>&1 | tee "$OUT/smoke.log"
        cp /tmp/la-smoke/results.json "$OUT/smoke.json" 2>/dev/null ;;
    run)
        train=("$DATA"/train/imagesTr/*.nii.gz) test=("$DATA"/test/imagesTr/*.nii.gz)
        if [ ${#train[@]} != 80 ] || [ ${#test[@]} != 20 ]; then
            echo "not every volume is here (${#train[@]} train, ${#test[@]} test):" \
                "carry the missing parts" >&2
            exit 1
        fi
        trap 'for s in $SEEDS; do cp /tmp/la-s$s/results.json "$OUT/results-s$s.json" 2>/dev/null; done' EXIT
        for seed in $SEEDS; do
            python3 benchmarks/la2018.py run "$DATA" --k 4,8 --seeds $seed -o /tmp/la-s$seed \
                -w /tmp/la-ws 2>&1 | tee "$OUT/run-s$seed.log"
        done ;;
esac
