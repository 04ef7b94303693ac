#!/usr/bin/env bash
# Creates .venv (if absent) and installs crossling with everything it needs, offline-safe:
# the CPU torch wheel first (torch==2.13.0 lies on local disk here), so that the project's
# `torch>=2.2` requirement is already met and pip never fetches a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

pip_install() {
    # pip's notes about this machine's unused local indexes are noise; real errors still show.
    .venv/bin/python -m pip install -q --disable-pip-version-check "$@" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.crossling-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    pip_install "torch==2.13.0"
    pip_install -e ".[dev,ray]"
    touch "$stamp"
fi
