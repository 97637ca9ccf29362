#!/usr/bin/env bash
# Installs the project with its training and test extras, then runs the linters, the test suite and the docs
# build; then the wheel in a clean venv (scripts/test_wheel.sh) and the line-side tests again on Python 3.10
# without torch (scripts/test_line_py310.sh; skipped where no 3.10 exists).
# The console's browser tests need Debian's chromium and its driver, the MQTT tests Mosquitto: installed here
# where apt can (else those tests skip, saying why).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! { command -v chromedriver && command -v mosquitto && command -v mosquitto_sub; } >/dev/null \
    && command -v apt-get >/dev/null; then
    { apt-get update -qq && apt-get install -y -qq chromium chromium-driver mosquitto mosquitto-clients; } \
        >/dev/null 2>&1 || echo "chromium or Mosquitto could not be installed: their tests will skip"
fi
python3 -m pip install --quiet --disable-pip-version-check -e ".[train,test,tensorrt-rtx]"
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m pytest "$@"
NO_MKDOCS_2_WARNING=1 python3 -m mkdocs build --strict --quiet   # the docs site builds, offline, every link found
bash scripts/test_wheel.sh
bash scripts/test_line_py310.sh
