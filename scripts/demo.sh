#!/usr/bin/env bash
# The main job on the embedded default: sets up .venv, then runs crossling's offline demo study.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/crossling demo "$@"
