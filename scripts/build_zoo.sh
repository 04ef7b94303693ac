#!/usr/bin/env bash
# Rebuilds the bundled mini-zoo (src/crossling/zoo/) from src/crossling/zoo/recipe.toml:
# synthetic corpus -> prepare -> `crossling pretrain` per model (two at a time, one thread each).
# About 30 minutes on 2 CPU cores. Extra arguments go to `crossling zoo build` (e.g. --work DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/crossling zoo build --work "${ZOO_WORK:-zoo-build}" "$@"
