#!/usr/bin/env bash
# The package as a user installs it: a wheel built with `python -m build`, installed into a clean virtual
# environment with the core dependencies only, then with each station extra in turn. After each step the tools
# start (--help) and a tool whose extra is still missing says which one to install (exit 2, one line).
# The train, tensorrt-rtx and test extras (torch and its CUDA libraries, gigabytes) are what the main test run
# installs from the source tree; they are not installed again here.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/wheel
rm -rf "$out"
mkdir -p "$out"
started=$SECONDS
python3 -m build --wheel --outdir "$out" > "$out/build.log" 2>&1 || { tail -n 20 "$out/build.log"; exit 1; }
wheel=$(ls "$out"/edge_inspect-*.whl)
python3 -m venv "$out/venv"
pip=("$out/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location)
bin="$out/venv/bin"
"${pip[@]}" "$wheel"
echo "wheel $(basename "$wheel"): core installed in $((SECONDS - started)) s"
for tool in edge-run edge-listen edge-control edge-calibrate edge-bridge edge-console edge-bench; do
    "$bin/$tool" --help > /dev/null
done
# Says which extra is missing, in one line: $1 extra, then the command.
says_missing() {
    local extra=$1
    shift
    local err
    if err=$("$@" 2>&1 >/dev/null); then echo "error: '$*' ran without the $extra extra" >&2; exit 1; fi
    if [ "$(printf '%s\n' "$err" | wc -l)" -ne 1 ] || [[ "$err" != *"edge-inspect[$extra]"* ]]; then
        echo "error: '$*' without the $extra extra said: $err" >&2
        exit 1
    fi
}
mkdir -p "$out/good"
cp tests/colour_model.py "$out/"  # a small ONNX model made without torch, imported beside the installed package
(cd "$out" && venv/bin/python -c '
import cv2, numpy as np
from pathlib import Path
from colour_model import write_colour_model
from edge.sidecar import FrameSpec
for i in range(4):
    cv2.imwrite(f"good/{i}.png", np.random.default_rng(i).integers(0, 255, (64, 64, 3), np.uint8))
write_colour_model(Path("good"), Path("model.onnx"), FrameSpec(64, 64, "rgb8"))')
says_missing basler "$bin/edge-run" --engine "$out/model.onnx" --camera basler0 --threshold 0.5
says_missing bridge "$bin/edge-bridge" --station a=tcp://127.0.0.1:1
says_missing console "$bin/edge-console" --station a=tcp://127.0.0.1:1
says_missing reports "$bin/edge-calibrate" --engine missing.onnx --good .
"$bin/python" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ("torch", "pypylon", "scipy", "asyncua", "starlette")))' \
    || { echo "error: the core install brought an extra's library" >&2; exit 1; }
for extra in basler openvino bridge console reports; do
    "${pip[@]}" "$wheel[$extra]"
done
"$bin/python" -c 'import pypylon, openvino, asyncua, pymodbus, paho.mqtt, pysparkplug, starlette, uvicorn, argon2, scipy, matplotlib'
if err=$("$bin/edge-bridge" --station a=tcp://127.0.0.1:1 --opcua off --modbus off 2>&1); then exit 1; fi
[[ "$err" == *"nothing to serve"* ]] || { echo "error: edge-bridge with its extra said: $err" >&2; exit 1; }
echo "wheel with the basler, openvino, bridge, console and reports extras: tools start; $((SECONDS - started)) s"
