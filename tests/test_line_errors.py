"""What the line says when something is off: frames of the wrong size, no subscriber, the JSON lines it writes,
the times on a verdict, and edge-bench's help."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from edge.cli import bench_main
from tests.emulator import emulator_images
from tests.test_runtime import SCHEMA, free_endpoint, station


def run_station(engine: Path, camera: str, *flags: str) -> subprocess.CompletedProcess:
    """``edge-run`` on ``camera`` with ``flags``, publishing on a free endpoint; its exit status and output."""
    return subprocess.run(station(engine, camera, free_endpoint(), *flags), capture_output=True, text=True, timeout=120)


def test_frames_of_the_wrong_size_are_explained_at_the_first_frame_and_fail_the_run(
    onnx_engine: Path, tmp_path: Path
) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((32, 48, 3), 80 * i, np.uint8))
    result = run_station(onnx_engine, f"folder://{tmp_path}", "--threshold", "0.5", "--wait-subscribers", "0")
    assert result.returncode == 1, result.stderr
    said = result.stderr
    assert said.count("frames are 48x32 with 3 channel(s) (uint8), the engine takes 64x64 rgb8") == 1
    assert "edge-export --frame-size 48x32" in said and "--roi" in said
    assert said.index("frames are 48x32") < said.index("3 frames → 3 verdicts")  # said as it happened, not at the end
    assert "every one of the 3 frames was an error (frame_format 3)" in said
    assert "Traceback" not in said


def test_a_run_with_some_good_frames_still_exits_0(onnx_engine: Path, part_folder: Path) -> None:
    result = run_station(onnx_engine, f"folder://{part_folder}", "--threshold", "0.5", "--wait-timeout", "0.5")
    assert result.returncode == 0 and "frames are 48x32" in result.stderr and "every one" not in result.stderr


def test_without_a_subscriber_the_wait_and_its_end_say_the_same_numbers(onnx_engine: Path, part_folder: Path) -> None:
    result = run_station(onnx_engine, f"folder://{part_folder}", "--threshold", "0.5", "--wait-timeout", "1.5")
    assert result.returncode == 0, result.stderr
    assert "waiting up to 1.5 s for 1 subscriber(s)" in result.stderr
    assert "0 of 1 subscriber(s) connected after 1.5 s: starting anyway" in result.stderr


def test_every_jsonl_line_of_edge_run_validates_against_the_published_schema(
    onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "verdicts.jsonl"
    args = ("--threshold", "0.5", "--wait-subscribers", "0", "--jsonl", str(out), "--station", "line7")
    result = run_station(onnx_engine, f"folder://{part_folder}", *args)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(list(part_folder.glob("*.png")))
    for line in lines:
        jsonschema.validate(line, SCHEMA)
        assert line["kind"] == "verdict" and line["station"] == "line7" and line["schema"] == 1
        assert line["t_capture_ns"] <= line["t_receive_ns"] <= line["t_publish_ns"]
        assert line["camera_timestamp"] is None  # files have no camera clock
    assert len({line["run_id"] for line in lines}) == 1


def test_emulated_camera_verdicts_carry_the_trigger_time_and_no_fake_camera_clock(
    onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    pytest.importorskip("pypylon.pylon", reason="pypylon is not installed (pip install pypylon)")
    images = emulator_images(part_folder, tmp_path)
    out = tmp_path / "verdicts.jsonl"
    args = ["--trigger", "software", "--emulator-images", str(images), "--fps", "20", "--max-frames", "6"]
    args += ["--threshold", "0.5", "--wait-subscribers", "0", "--jsonl", str(out)]
    result = run_station(onnx_engine, "basler1", *args)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 6
    for line in lines:
        jsonschema.validate(line, SCHEMA)
        assert line["camera_timestamp"] is None  # pylon's emulator has no clock: null, not a timestamp of 0
        assert line["t_capture_ns"] < line["t_receive_ns"]  # the trigger was sent before the frame arrived


def test_edge_bench_help_says_what_each_option_is_and_its_default(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        bench_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--engine ENGINE artefact to measure" in text
    for default in ("(default 1)", "(default 200)", "(default: engine and pipeline)", "(default: print only)"):
        assert default in text


def test_an_artefact_without_its_sidecar_is_refused_saying_the_sidecar_travels_with_it(
    onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    alone = tmp_path / onnx_engine.name
    alone.write_bytes(onnx_engine.read_bytes())
    result = run_station(alone, f"folder://{part_folder}", "--threshold", "0.5")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"has no sidecar {alone.name}.json beside it: the sidecar travels with its artefact" in lines[0]
