"""Compare, on one machine with the same weights and frames: the authors' way of running MemSeg, our folded
graph on every backend present (ONNX Runtime CPU; torch FP32, and FP16 with CUDA graphs on a GPU), batch 1 and
batched, and the floor: FLOPs and bytes per frame over the machine's measured compute and copy peaks (a
roofline), and the fraction of it the best way achieves.

    python -m benchmarks.compare --checkpoint memseg.pt --frames 50 --out benchmarks/results/cpu
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.reference_memseg import ReferenceMemSeg
from edge.bench import machine, percentiles
from edge.engines import open_engine
from edge.engines.torch_engine import GraphedModule
from edge.sidecar import FrameSpec
from export.checkpoint import load_model
from export.exporter import export_artefact
from export.graph.deployable import DeployableGraph


def timed(run, inputs: list, warmup: int = 3, sync=lambda: None) -> list[float]:
    for item in inputs[:warmup]:
        run(item)
    sync()
    times = []
    for item in inputs:
        started = time.perf_counter()
        run(item)
        sync()
        times.append((time.perf_counter() - started) * 1e3)
    return times


def row(name: str, batch: int, times: list[float]) -> dict:
    stats = percentiles(times)
    return {
        "way": name,
        "batch": batch,
        **{k: round(v, 3) for k, v in stats.items()},
        "frames_per_s": round(batch * 1e3 / float(np.mean(times)), 1),
    }


def flops_per_frame(deployed: DeployableGraph, frame: FrameSpec) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        deployed(torch.zeros((1, *frame.frame_shape()), dtype=torch.uint8))
    return float(counter.get_total_flops())


def bytes_per_frame(deployed: DeployableGraph, frame: FrameSpec, batch: int) -> float:
    """A lower bound on memory traffic per frame: the graph's weights and memory bank, read once per batch, plus
    the frame in and the score and map out (activations that stay in cache are not counted)."""
    constants = sum(t.numel() * t.element_size() for t in (*deployed.parameters(), *deployed.buffers()))
    with torch.no_grad():
        score, anomaly_map = deployed(torch.zeros((1, *frame.frame_shape()), dtype=torch.uint8))
    outputs = score.numel() * score.element_size() + anomaly_map.numel() * anomaly_map.element_size()
    return constants / batch + float(np.prod(frame.frame_shape())) + outputs


def peak_bandwidth(device: torch.device, trials: int = 7) -> float:
    """Measured copy bandwidth in GB/s (bytes read plus bytes written, 256 MB a copy), the best of ``trials``."""
    a = torch.ones(64 * 2**20, device=device)
    b = torch.empty_like(a)
    return 2 * a.numel() * a.element_size() / best_seconds(lambda: b.copy_(a), device, trials) / 1e9


def roofline(flops: float, traffic: float, gflops: float, gbs: float) -> float:
    """The shortest possible time per frame in ms: compute or memory traffic, whichever takes longer."""
    return max(flops / gflops, traffic / gbs) / 1e6


def peak_gflops(device: torch.device, dtype: torch.dtype, trials: int = 7) -> float:
    """Measured matrix-multiply rate in GFLOP/s, the best of ``trials`` (the least disturbed by other work)."""
    n = 2048 if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / best_seconds(lambda: a @ b, device, trials) / 1e9


def best_seconds(run, device: torch.device, trials: int) -> float:
    """The shortest of ``trials`` timed runs of ``run`` after one warm-up."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    run()
    sync()
    times = []
    for _ in range(trials):
        started = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8, help="the batched measurement's batch size")
    parser.add_argument("--frame-size", type=int, default=0, help="square RGB frame side (default: model size)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    model, _ = load_model(args.checkpoint)
    size = args.frame_size or model.config.image_size
    frame = FrameSpec(size, size, "rgb8", max_batch=args.batch)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.frames, size, size, 3), dtype=np.uint8)
    batches = [frames[i : i + args.batch] for i in range(0, len(frames) - args.batch + 1, args.batch)] or [frames]
    rows = []
    cpu = torch.device("cpu")
    reference = ReferenceMemSeg(load_model(args.checkpoint)[0], cpu)
    rows.append(row("authors' way, torch CPU", 1, timed(reference, list(frames))))
    deployed = DeployableGraph(model, frame, "fp32").eval()
    with torch.no_grad():
        rows.append(
            row("folded graph, torch CPU FP32", 1, timed(lambda f: deployed(torch.from_numpy(f[None])), list(frames)))
        )
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / "memseg.onnx"
        export_artefact(args.checkpoint, onnx, frame, "fp32")
        with open_engine(onnx) as engine:
            rows.append(
                row("folded graph, ONNX Runtime CPU FP32", 1, timed(lambda f: engine.infer(f[None]), list(frames)))
            )
            rows.append(row("folded graph, ONNX Runtime CPU FP32", args.batch, timed(engine.infer, batches)))
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        sync = torch.cuda.synchronize
        rows.append(
            row(
                "authors' way, torch GPU",
                1,
                timed(ReferenceMemSeg(load_model(args.checkpoint)[0], gpu), list(frames), sync=sync),
            )
        )
        for precision in ("fp32", "fp16"):
            graphed = GraphedModule(DeployableGraph(model, frame, precision).eval().to(gpu), gpu)
            for batch in (1, args.batch):
                inputs = [f[None] for f in frames] if batch == 1 else batches
                rows.append(
                    row(f"folded graph, torch GPU {precision} + CUDA graph", batch, timed(graphed, inputs, sync=sync))
                )
    flops = flops_per_frame(deployed, frame)
    # the CPU runs the FP32 graph; a GPU is judged by the FP16 graph, whose weights and bank are half the bytes
    machines = {"cpu": (deployed, peak_gflops(cpu, torch.float32), peak_bandwidth(cpu))}
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        half = DeployableGraph(model, frame, "fp16").eval()
        machines["gpu"] = (half, peak_gflops(gpu, torch.float16), peak_bandwidth(gpu))
    floor = {"gflop_per_frame": round(flops / 1e9, 2)}
    for name, (graph, gflops, gbs) in machines.items():
        traffic = {batch: bytes_per_frame(graph, frame, batch) for batch in (1, args.batch)}
        floor |= {f"{name}_peak_gflops": round(gflops, 1), f"{name}_peak_gb_per_s": round(gbs, 1)}
        floor |= {f"{name}_mb_per_frame_batch_{batch}": round(value / 1e6, 2) for batch, value in traffic.items()}
        for batch in traffic:
            limit = roofline(flops, traffic[batch], gflops, gbs)
            best = min(
                (r["p50"] / r["batch"] for r in rows if name.upper() in r["way"] and r["batch"] == batch), default=None
            )
            floor[f"{name}_floor_ms_batch_{batch}"] = round(limit, 4)
            if best:
                floor[f"{name}_fraction_of_floor_batch_{batch}"] = round(limit / best, 3)
    result = {
        "machine": machine(),
        "checkpoint": str(args.checkpoint),
        "frame": [size, size, 3],
        "rows": rows,
        "floor": floor,
    }
    lines = ["| way | batch | p50 ms/batch | p99 ms/batch | frames/s |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {r['way']} | {r['batch']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['frames_per_s']:.1f} |" for r in rows
    ]
    text = "\n".join(lines) + f"\n\nfloor: {json.dumps(floor)}\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.json").write_text(json.dumps(result, indent=2))
        (args.out / "compare.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
