#!/usr/bin/env bash
# Issue 14's GPU measurements in one run (< 8 min on one H100/H200), for the device tool:
#
#   device: run(command="bash benchmarks/device/speed.sh", carry=[".device-data", ".whl"],
#               timeout_s=540)   (.whl/ as benchmarks/device/env.sh says)
#   (.device-data/hippocampus, git-ignored, as in few_label_full.sh; without it the
#    hippocampus row is left out and the CT rows still run)
#
# 1. pre-training step rate vs the bare U-Net forward/backward at 224², 128 pairs per step,
#    width 32, bf16 + channels_last, eager and torch.compile (target: SAL >= 85 % of bare);
# 2. segment_speed.py on CUDA: the 512 x 512 x 200 CT with the default CT recipe and --fast
#    (target < 1 s file to file, interpreter start excluded), plus 20 hippocampus crops.
# Every table and its JSON line go to $OUT; each step has its own timeout so a slow one cannot
# take the others down with it.
set -uo pipefail
cd "$(dirname "$0")/../.."
DATA="${DATA:-.device-data/hippocampus}"
# shellcheck source=benchmarks/device/env.sh
source benchmarks/device/env.sh
git rev-parse --short HEAD 2>/dev/null | tee "$OUT/commit.txt" || true
timeout 270 python3 benchmarks/pretrain_throughput.py --device cuda --size 224 --batch-size 128 \
    --width 32 --steps 20 --warmup 5 --compile 2>&1 | tee "$OUT/pretrain_throughput.txt"
timeout 150 python3 benchmarks/segment_speed.py --device cuda --cases 20 --hippocampus "$DATA" \
    2>&1 | tee "$OUT/segment_speed.txt"
