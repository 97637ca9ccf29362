#!/usr/bin/env bash
# The line side as a JetPack 6 station runs it: Python 3.10, installed without torch. Creates (or reuses)
# .venv310/ from pyenv's Python 3.10.13, installs the project with no extras plus the line-side test tools, checks
# that torch is absent, and runs the line-side tests there. Skips with the reason where no Python 3.10 exists.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv310
LINE_TESTS=(
    tests/test_edge_import.py
    tests/test_installed_station.py
    tests/test_runtime.py
    tests/test_control.py
    tests/test_security.py
    tests/test_calibration.py
    tests/test_basler.py
    tests/test_tensorrt.py
    tests/test_line_errors.py
    tests/test_rejects.py
    tests/test_bridge.py
    tests/test_metrics_endpoint.py
    tests/test_faults.py
    tests/test_registries.py
    tests/test_settings.py
    tests/test_recipes.py
    tests/test_cameras.py
    tests/test_console.py
    tests/test_mqtt.py
)

if ! PYENV_VERSION=3.10.13 python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
    echo "line side on Python 3.10: skipped, no Python 3.10 here (PYENV_VERSION=3.10.13 python is missing)"
    exit 0
fi
started=$SECONDS
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
    rm -rf "$VENV"
    PYENV_VERSION=3.10.13 python -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[line-test]"
if "$VENV/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'; then
    echo "error: torch is installed in $VENV, so it cannot show that the line side runs without it: rm -rf $VENV" >&2
    exit 2
fi
echo "line side on $("$VENV/bin/python" --version), without torch: ${LINE_TESTS[*]}"
"$VENV/bin/python" -m pytest -p no:cacheprovider "${LINE_TESTS[@]}"
echo "line side on Python 3.10: $((SECONDS - started)) s"
