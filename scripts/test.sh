#!/usr/bin/env bash
# Installs the project with its training and test extras, then runs the linters and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e ".[train,test,tensorrt-rtx]"
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m pytest "$@"
