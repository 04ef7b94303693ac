#!/usr/bin/env bash
# The test suite: sets everything up (venv, packages, headless Chromium for the report test),
# lints, then runs pytest, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; browser tests will be skipped" >&2
fi
# pdflatex + booktabs: the report's .tex tables are typeset to check that they fit a column or a page
if ! command -v pdflatex >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        texlive-latex-base texlive-latex-recommended >/dev/null) \
        || echo "warning: could not install pdflatex; the LaTeX typesetting test will be skipped" >&2
fi
.venv/bin/ruff check src tests bench
.venv/bin/python -m pytest "$@"
