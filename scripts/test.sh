#!/usr/bin/env bash
# Installs the project with its training and test extras, then runs the linters and the test suite; then the
# line-side tests again on Python 3.10 without torch (scripts/test_line_py310.sh; skipped where no 3.10 exists).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e ".[train,test,tensorrt-rtx]"
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m pytest "$@"
bash scripts/test_line_py310.sh
