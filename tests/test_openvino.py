"""The OpenVINO engine: the same numbers as ONNX Runtime within its precision's tolerance, BF16 only where the CPU
has it, a compiled-model cache that a restart loads, and edge-run choosing it with --backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.engines import EngineError, open_engine
from edge.frames import frames_from_images

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")

from edge.engines import openvino_engine  # noqa: E402  (after the skip: the module is useless without OpenVINO)

# FP32 is the same arithmetic in another order; BF16 keeps 8 bits of mantissa (about 2 to 3 decimal digits).
TOLERANCES = {"fp32": {"score": 1e-4, "map": 1e-4}, "bf16": {"score": 1e-2, "map": 0.1}}


def brick_frames(engine_path: Path, brick_dataset: Path) -> np.ndarray:
    with open_engine(engine_path) as engine:
        frame = engine.frame
    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(brick_dataset.rglob("test/*/*.png"))]
    return frames_from_images(images, frame)


def cpu_has_bf16() -> bool:
    return "BF16" in openvino_engine.cpu_capabilities(ov.Core())


@pytest.mark.parametrize(
    "precision",
    [
        "fp32",
        pytest.param(
            "bf16",
            marks=pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no BF16 instructions"),
        ),
    ],
)
def test_openvino_agrees_with_onnx_runtime(
    precision: str, onnx_engine: Path, brick_dataset: Path, tmp_path: Path
) -> None:
    frames = brick_frames(onnx_engine, brick_dataset)
    cache = tmp_path / "cache"
    with open_engine(onnx_engine) as reference:
        expected = [reference.infer(frames[i : i + 3]) for i in range(0, len(frames), 3)]
    with open_engine(onnx_engine, backend="openvino", inference_precision=precision, cache_dir=cache) as engine:
        assert engine.backend == "openvino"
        for i, want in zip(range(0, len(frames), 3), expected, strict=True):  # batches of 3, the last shorter
            got = engine.infer(frames[i : i + 3])
            assert got.anomaly_map.shape == want.anomaly_map.shape
            assert np.abs(got.score - want.score).max() <= TOLERANCES[precision]["score"]
            assert np.abs(got.anomaly_map - want.anomaly_map).max() <= TOLERANCES[precision]["map"]


def test_a_restart_loads_the_compiled_model_from_the_cache(onnx_engine: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with open_engine(onnx_engine, backend="openvino", cache_dir=cache) as first:
        assert not first.loaded_from_cache
    assert any(cache.iterdir())
    with open_engine(onnx_engine, backend="openvino", cache_dir=cache) as second:
        assert second.loaded_from_cache


def test_bf16_is_refused_on_a_cpu_without_it(
    onnx_engine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This CPU may have BF16: stand in for one that has not by hiding the capability OpenVINO reports.
    monkeypatch.setattr(openvino_engine, "cpu_capabilities", lambda core: ["FP32", "INT8"])
    engine = open_engine(onnx_engine, backend="openvino", inference_precision="bf16", cache_dir=tmp_path)
    with pytest.raises(EngineError, match="no BF16 instructions.*use inference precision fp32"):
        engine.activate()


def test_engine_settings_are_checked_before_anything_loads(onnx_engine: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="backend openvino runs .onnx artefacts"):
        open_engine(tmp_path / "memseg.pt2", backend="openvino")
    with pytest.raises(EngineError, match="threads: OpenVINO settings; add backend openvino"):
        open_engine(onnx_engine, threads=2)
    with pytest.raises(EngineError, match="inference precision 'fp16'"):
        open_engine(onnx_engine, backend="openvino", inference_precision="fp16")
    with pytest.raises(EngineError, match="backend 'openvina'"):
        open_engine(onnx_engine, backend="openvina")


def test_edge_run_on_openvino_judges_every_image(onnx_engine: Path, part_folder: Path, tmp_path: Path) -> None:
    code = "import sys; from edge.cli import run_main; sys.exit(run_main(sys.argv[1:]))"
    args = ["--engine", str(onnx_engine), "--camera", f"folder://{part_folder}", "--threshold", "0.5"]
    args += ["--backend", "openvino", "--threads", "1", "--openvino-cache", str(tmp_path / "cache")]
    args += ["--publish", "ipc://" + str(tmp_path / "verdicts"), "--wait-subscribers", "0", "--jsonl", "-"]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    verdicts = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    images = sorted(part_folder.glob("*.png"))
    assert len(verdicts) == len(images)
    judged = [v for v in verdicts if v["verdict"] in ("pass", "fail")]
    assert len(judged) == len(images) - 2  # the broken file and the wrong size are errors
    assert "(openvino, " in result.stderr


def test_edge_run_refuses_a_bad_backend_setting_in_one_line(onnx_engine: Path, tmp_path: Path) -> None:
    config = tmp_path / "station.toml"
    config.write_text(f'engine = "{onnx_engine}"\ncamera = "folder://{tmp_path}"\nbackend = "openvina"\n')
    code = "import sys; from edge.cli import run_main; sys.exit(run_main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "--config", str(config), "--threshold", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "error: backend 'openvina': use one of auto" in result.stderr
    assert "Traceback" not in result.stderr


def test_edge_bench_measures_ways_side_by_side(onnx_engine: Path, tmp_path: Path) -> None:
    from edge.cli import bench_main

    args = ["--engine", str(onnx_engine), "--backend", "onnxruntime,openvino", "--batch", "1,2", "--frames", "8"]
    assert bench_main([*args, "--rounds", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    names = [way["name"] for way in result["ways"]]
    assert names == ["memseg.onnx, onnxruntime fp32", "memseg.onnx, openvino fp32"]
    for way in result["ways"]:
        assert [row["batch"] for row in way["engine_only"]] == [1, 2]
        assert all(len(row["latency_ms"]["round_p50"]) == 2 for row in way["engine_only"])
        received_to_sent = way["pipeline_paced"]["stages_ms"]["receive_to_publish"]
        assert way["pipeline_paced"]["frames"] == 8 and received_to_sent["p50"] > 0
    assert "| memseg.onnx, openvino fp32 | 1 |" in (tmp_path / "bench.md").read_text()
