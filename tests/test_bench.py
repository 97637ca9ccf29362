"""Benchmarks measure what they say: the reference way computes the same scores as the folded graph, and
edge-bench reports every stage (no timing assertions: numbers are for the benchmark reports)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.reference_memseg import ReferenceMemSeg
from edge.bench import run_bench
from edge.sidecar import FrameSpec
from export.checkpoint import load_model
from export.graph.deployable import DeployableGraph


def test_the_reference_way_computes_what_the_folded_graph_computes(tiny_checkpoint: tuple[Path, dict]) -> None:
    model, _ = load_model(tiny_checkpoint[0])
    reference = ReferenceMemSeg(load_model(tiny_checkpoint[0])[0], torch.device("cpu"))
    folded = DeployableGraph(model, FrameSpec(64, 64, "rgb8"))
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        scores, maps = folded(torch.from_numpy(frames))
    for i, frame in enumerate(frames):
        score, amap = reference(frame)
        assert abs(score - float(scores[i])) < 1e-4
        assert np.abs(amap - maps[i, 0].numpy()).max() < 1e-4


def test_edge_bench_reports_engine_and_pipeline_stages(onnx_engine: Path, tmp_path: Path) -> None:
    result = run_bench(onnx_engine, [1, 2, 64], frames=12, pipeline=True, out=tmp_path)
    assert [r["batch"] for r in result["engine_only"]] == [1, 2]  # 64 exceeds the engine's max batch
    for r in result["engine_only"] + [result["engine_alone_after_line"]]:
        assert r["latency_ms"]["p50"] > 0 and r["frames_per_s"] > 0
    assert result["engine_alone_after_line"]["batch"] == 1  # the full-rate run is bracketed by the engine alone
    assert "| 1, after the line |" in (tmp_path / "bench.md").read_text()
    stages = result["pipeline"]["stages_ms"]
    assert result["pipeline"]["frames"] == 12
    # throughput counts from the first capture to the last verdict published, not from the engine's start and the
    # wait for the subscriber
    pipeline = result["pipeline"]
    assert pipeline["frames_per_s"] == pytest.approx(12 / pipeline["span_s"])
    assert pipeline["frames_per_s"] > 12 / pipeline["seconds"]
    assert {"queue", "infer", "score", "total", "publish_to_subscriber", "capture_to_subscriber"} <= set(stages)
    paced = result["pipeline_paced"]  # in rounds that take turns with the engine alone called at the same pace
    assert paced["frames"] == 12 and len(paced["rounds"]) == 4
    assert all(r["engine_alone_p50"] > 0 and r["receive_to_publish_p50"] >= r["infer_p50"] > 0 for r in paced["rounds"])
    assert "In turns with the engine alone paced alike" in (tmp_path / "bench.md").read_text()
    assert stages["capture_to_subscriber"]["p50"] >= stages["infer"]["p50"]
    for name in ("bench.json", "bench.md", "latency_cdf.png", "stages.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_the_engine_alone_paced_is_called_at_that_rate(onnx_engine: Path) -> None:
    from edge.bench import bench_engine
    from edge.engines import open_engine

    with open_engine(onnx_engine) as engine:
        started = time.perf_counter()
        result = bench_engine(engine, 1, 10, warmup=1, fps=20.0)
        seconds = time.perf_counter() - started
    assert result["latency_ms"]["n"] == 10 and seconds >= 9 / 20  # ten calls 50 ms apart
