#!/usr/bin/env bash
# Every benchmark from a fresh clone, each comparing crossling with the baseline in the same run:
#   bash bench/run_all.sh [--quick]
# Installs the environment (scripts/bootstrap.sh) plus the benchmark-only extra (librosa, accelerate),
# then prints RATIO lines; the full output also goes to $TMPDIR/crossling-bench/run_all-<UTC time>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[bench]" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
mkdir -p "${TMPDIR:-/tmp}/crossling-bench"
log="${TMPDIR:-/tmp}/crossling-bench/run_all-$(date -u +%Y-%m-%dT%H%MZ).txt"
{
    echo "# bash bench/run_all.sh $*  ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
    train_json="${TMPDIR:-/tmp}/crossling-bench/train.json"
    rm -f "$train_json"
    run() { echo "## $*"; .venv/bin/python -m "bench.$1" "${@:2}" || echo "FAILED: $1 (exit $?)"; }
    run bench_prepare "$@"
    run bench_train --json "$train_json" "$@"
    if [ -f "$train_json" ]; then run bench_mfu --train-json "$train_json" "$@"; else run bench_mfu "$@"; fi
    run bench_threads "$@"
    run bench_threads --busy 2 "$@"
    run bench_eval "$@"
    run bench_analysis "$@"
} 2>&1 | grep --line-buffered -v -i -E "warn|^\s*$" | tee "$log"
echo "summary:"
grep -E "^(RATIO|CEILING|LOSS|MFU|PEAK|FLOPS|TRANSCRIPTS|SAME|ANALYSIS)" "$log"
