#!/usr/bin/env bash
# Every GPU measurement crossling needs, in one command, on one GPU, in under 10 minutes:
#   bash bench/gpu_check.sh [--device cuda:0] [--steps 10] [--no-baseline]
# Prints each figure with its ceiling, and crossling's LARGE step against a Hugging Face Trainer's (pinned
# to the same GPU by CUDA_VISIBLE_DEVICES; needs the bench extra's accelerate) with the ceiling of that
# ratio (bench/bench_gpu.py says how each is measured). On a machine without a visible CUDA GPU it says so
# and exits 2; past 10 minutes it is stopped and exits 124.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
if [ ! -x "$python" ]; then
    echo "gpu_check: $python not found; run scripts/bootstrap.sh first (or set PYTHON=/path/to/python)" >&2
    exit 2
fi
exec timeout 600 "$python" -m bench.bench_gpu "$@"
