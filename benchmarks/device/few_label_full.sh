#!/usr/bin/env bash
# The full few-label profile on one GPU, prepared for the device tool (issues 16, 11, 17).
#
#   here:   mkdir -p .device-data && cp -r ../shared/data/hippocampus .device-data/
#           (.device-data/ is git-ignored; it is carried, never committed), and .whl/ as
#           benchmarks/device/env.sh says
#   device: run(command="bash benchmarks/device/few_label_full.sh", carry=[".device-data", ".whl"],
#               timeout_s=540)
#
# Puts salign's missing dependencies on the device's Python (env.sh), runs the profile
# with the plain reference beside it, and writes table.md, results.json and the log to $OUT.
# METHODS narrows the run when time is short (default: scratch,sal — the issue-16 rows; the
# semi rows are METHODS=scratch+semi,sal+semi).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA="${DATA:-.device-data/hippocampus}"
METHODS="${METHODS:-scratch,sal}"
# shellcheck source=benchmarks/device/env.sh
source benchmarks/device/env.sh
# results.json is rewritten after every run: whatever finished comes back even on a timeout
trap 'cp /tmp/salign-bench/table.md /tmp/salign-bench/results.json "$OUT/" 2>/dev/null || true' EXIT
python3 benchmarks/few_label.py "$DATA" --profile full --device cuda --methods "$METHODS" \
    -o /tmp/salign-bench -w /tmp/salign-ws 2>&1 | tee "$OUT/few_label.log"
cp /tmp/salign-bench/few_label.png "$OUT/"
