"""A station of several cameras on one engine: ``edge-run --camera basler0 --camera basler1 …`` with pylon's
emulator offering four cameras, one of them unplugged mid-run (its pylon device destroyed under the grab). Each
camera is its own station (``NAME/camN`` on the endpoint's port plus 10 per camera); one shared engine fills batches
across them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.bridge.config import parse_station_flag
from edge.client import VerdictSubscriber
from edge.config import ConfigError, StationConfig
from edge.run import camera_config, offset_endpoint
from tests.emulator import emulator_images
from tests.test_faults import ROOT, assert_one_verdict_per_frame
from tests.test_runtime import free_endpoint

CAMERAS = 4
FRAMES = 40  # per camera


def test_each_camera_is_a_station_of_its_own_on_the_ports_that_follow() -> None:
    config = StationConfig.load(
        None,
        {
            "engine": "m.onnx", "camera": ["basler0", "basler1"], "station": "line3", "publish": "tcp://*:5556",
            "control": "tcp://127.0.0.1:5600", "metrics": "9100", "jsonl": "/var/log/v.jsonl", "rejects": "/r",
        },
    )  # fmt: skip
    assert config.camera == ("basler0", "basler1")
    second = camera_config(config, 1)
    assert (second.camera, second.station, second.publish) == (("basler1",), "line3/cam2", "tcp://*:5566")
    assert (second.control, second.metrics, second.jsonl) == ("tcp://127.0.0.1:5610", "9110", "/var/log/v-cam2.jsonl")
    assert second.rejects == "/r/cam2" and offset_endpoint("ipc:///run/edge", 2) == "ipc:///run/edge-cam3"
    assert StationConfig.load(None, {"engine": "m.onnx", "camera": "basler0"}).camera == ("basler0",)
    # the bridge follows each camera by its station name
    assert parse_station_flag("line3/cam2=tcp://10.0.0.5:5566").name == "line3/cam2"
    with pytest.raises(ConfigError, match="parts joined by '/'"):
        parse_station_flag("line3//cam2=tcp://10.0.0.5:5566")


def test_four_emulated_cameras_share_one_engine_and_one_unplugged_costs_the_others_nothing(
    onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    pytest.importorskip("pypylon.pylon", reason="pypylon is not installed (pip install pypylon)")
    images = emulator_images(part_folder, tmp_path)
    endpoint = free_endpoint()
    while int(endpoint.rsplit(":", 1)[1]) + 10 * CAMERAS >= 65536:  # room for the cameras' ports
        endpoint = free_endpoint()
    spec = {"camera": "basler1", "source": {"10": "unplug"}}
    command = [
        sys.executable, "-m", "tests.fault_parts", json.dumps(spec), "--engine", str(onnx_engine),
        *[arg for i in range(CAMERAS) for arg in ("--camera", f"basler{i}")], "--trigger", "software", "--fps", "8",
        "--emulator-images", str(images), "--max-frames", str(FRAMES), "--publish", endpoint, "--threshold", "0.5",
        "--batch-timeout-ms", "25", "--station", "cell", "--wait-subscribers", "1", "--heartbeat-s", "0.2",
    ]  # fmt: skip
    subscribers = [VerdictSubscriber(offset_endpoint(endpoint, i)) for i in range(CAMERAS)]
    process = subprocess.Popen(
        command, cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYLON_CAMEMU": str(CAMERAS)}
    )
    messages: dict[str, list] = {f"cell/cam{i + 1}": [] for i in range(CAMERAS)}
    try:
        deadline, finished = time.monotonic() + 90, set()
        while len(finished) < CAMERAS and time.monotonic() < deadline:
            for subscriber in subscribers:
                for kind, payload in subscriber.poll(0.05):
                    messages[payload["station"]].append((kind, payload))
                    if kind == "status" and payload.get("final"):
                        finished.add(payload["station"])
        assert process.wait(timeout=30) == 0, process.stderr.read()[-3000:]
    finally:
        for subscriber in subscribers:
            subscriber.close()
        if process.poll() is None:
            process.kill()
    assert len(finished) == CAMERAS
    batches = []
    for station, received in messages.items():
        verdicts = [p for k, p in received if k == "verdict"]
        final = [p for k, p in received if k == "status" and p.get("final")][0]
        assert_one_verdict_per_frame(final["counters"], verdicts)  # seq contiguous from 0, frames = verdicts
        assert len(verdicts) == FRAMES, station
        if station != "cell/cam2":  # the others judged every part while it was away
            errors = [(v["reason"], v["detail"]) for v in verdicts if v["verdict"] == "error"]
            assert not errors, (station, errors)
        assert {v["camera"] for v in verdicts} == {f"basler{int(station[-1]) - 1}"}
        health = [p["health"] for k, p in received if k == "status" and "health" in p]
        assert ("camera_lost" in health) == (station == "cell/cam2"), (station, health)
        batches += [v["batch"] for v in verdicts]
    assert max(batches) > 1, "the shared engine never batched frames of several cameras"
    assert len({p["run_id"] for received in messages.values() for _, p in received}) == 1  # one process, one run
