"""Compare, on one machine in one run with the same weights and frames: the authors' way of running MemSeg, our
folded graph on every CPU runtime and precision present (ONNX Runtime FP32 and INT8; OpenVINO FP32, BF16 where
the CPU has it, and INT8), batch 1 and batched, engine time and frame received → verdict sent through the real
pipeline; and the floor: FLOPs and bytes per frame over the machine's measured compute peak for each precision
and its copy bandwidth (a roofline), with the fraction of it each way reaches. On a GPU, torch FP32/FP16 with
CUDA graphs as well.

The CPU ways are timed in rounds that take turns (:func:`edge.bench.interleaved`), so a change in the load of a
shared machine hits every way alike; the per-round medians give the spread, and the speed-ups are computed per
round.

    python -m benchmarks.compare --checkpoint memseg.pt --calibration-images good/ --out benchmarks/results/cpu
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

from benchmarks.reference_memseg import ReferenceMemSeg
from edge.bench import bench_pipeline, interleaved, machine, percentiles, random_frames
from edge.engines import Engine, open_engine
from edge.engines.torch_engine import GraphedModule
from edge.sidecar import FrameSpec
from export.checkpoint import load_model
from export.exporter import export_artefact
from export.graph.deployable import DeployableGraph
from export.quantize import export_int8

PEAK_SIDE = 2048  # the matrix product that measures a CPU's peak: 2048³ multiply-adds


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


def row(name: str, batch: int, stats: dict, precision: str = "fp32") -> dict:
    """One way at one batch size: latency percentiles per batch (and the per-round medians where there are)."""
    return {
        "way": name,
        "batch": batch,
        "precision": precision,
        **{k: [round(x, 3) for x in v] if isinstance(v, list) else round(v, 3) for k, v in stats.items()},
        "frames_per_s": round(batch * 1e3 / stats["p50"], 1),
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
    n = PEAK_SIDE if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / best_seconds(lambda: a @ b, device, trials) / 1e9


def matmul_onnx(n: int, int8: bool) -> bytes:
    """An ``n×n @ n×n`` ONNX product with a constant right side; with ``int8`` both sides go through QDQ (UINT8
    activations, INT8 weights), as in an ``edge-export --precision int8`` graph."""
    rng = np.random.default_rng(0)
    nodes, initializers, left, right = [], [], "x", "w"
    if int8:
        weight = rng.integers(-127, 128, (n, n), dtype=np.int8)
        initializers += [
            numpy_helper.from_array(weight, "w8"),
            numpy_helper.from_array(np.array(0.01, np.float32), "s"),
            numpy_helper.from_array(np.array(128, np.uint8), "zx"),
            numpy_helper.from_array(np.array(0, np.int8), "zw"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "s", "zx"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s", "zx"], ["xd"]),
            helper.make_node("DequantizeLinear", ["w8", "s", "zw"], ["wd"]),
        ]
        left, right = "xd", "wd"
    else:
        initializers.append(numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w"))
    nodes.append(helper.make_node("MatMul", [left, right], ["y"]))
    graph = helper.make_graph(
        nodes,
        "peak",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def peak_openvino(precision: str, trials: int = 7) -> float | None:
    """OpenVINO's matrix-multiply rate on this CPU in GOP/s for ``fp32``, ``bf16`` or ``int8``; None where OpenVINO
    is not installed or the CPU lacks BF16."""
    if importlib.util.find_spec("openvino") is None:
        return None
    import openvino as ov

    core = ov.Core()
    if precision == "bf16" and "BF16" not in [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]:
        return None
    n = PEAK_SIDE
    model = core.read_model(matmul_onnx(n, precision == "int8"), b"")
    hint = "bf16" if precision == "bf16" else "f32"
    request = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint}).create_infer_request()
    x = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    return 2 * n**3 / best_seconds(lambda: request.infer({"x": x}), torch.device("cpu"), trials) / 1e9


def cpu_peaks() -> dict[str, float]:
    """The best measured rate per precision, torch (oneDNN) or OpenVINO, whichever is faster here."""
    cpu = torch.device("cpu")
    candidates = {
        "fp32": [peak_gflops(cpu, torch.float32), peak_openvino("fp32")],
        "bf16": [peak_gflops(cpu, torch.bfloat16), peak_openvino("bf16")],
        "int8": [peak_openvino("int8")],
    }
    return {name: max(v for v in values if v) for name, values in candidates.items() if any(values)}


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


def cpu_ways(fp32: Path, int8: Path | None) -> list[tuple[str, Path, dict, str]]:
    """(name, artefact, engine settings, arithmetic) of every CPU runtime and precision present."""
    ways = [("ONNX Runtime FP32", fp32, {"backend": "onnxruntime"}, "fp32")]
    openvino = importlib.util.find_spec("openvino") is not None
    if openvino:
        ways.append(("OpenVINO FP32", fp32, {"backend": "openvino", "inference_precision": "fp32"}, "fp32"))
        if peak_openvino("bf16", trials=1) is not None:
            ways.append(("OpenVINO BF16", fp32, {"backend": "openvino", "inference_precision": "bf16"}, "bf16"))
    if int8 is not None:
        if openvino:
            ways.append(("OpenVINO INT8", int8, {"backend": "openvino", "inference_precision": "fp32"}, "int8"))
        ways.append(("ONNX Runtime INT8", int8, {"backend": "onnxruntime"}, "int8"))
    return ways


def serve_torch_ways(connection, checkpoint: Path, frame: FrameSpec, frames: list[np.ndarray]) -> None:
    """The torch ways in their own process: answers ``(name, frame index)`` by running that way on that frame."""
    model, payload = load_model(checkpoint)
    ways = {}
    if payload["model"] == "memseg":  # the authors' released inference code exists for MemSeg only
        reference = ReferenceMemSeg(load_model(checkpoint)[0], torch.device("cpu"))
        ways["authors' way, torch CPU"] = lambda f: reference(f[0])
    deployed = DeployableGraph(model, frame, "fp32").eval()

    def folded(f: np.ndarray):
        with torch.no_grad():
            return deployed(torch.from_numpy(f))

    ways["folded graph, torch CPU FP32"] = folded
    ways["round trip"] = lambda f: None
    connection.send([name for name in ways if name != "round trip"])
    while (request := connection.recv()) is not None:
        name, index = request
        ways[name](frames[index])
        connection.send(None)


class TorchWays:
    """The authors' way and the folded graph in torch, run in a process of their own and called frame by frame.

    torch's OpenMP threads keep spinning for a while after each call; in the benchmark's process they would take
    cores from the ONNX Runtime and OpenVINO ways measured next (measured: OpenVINO INT8 14 ms beside them, 10.6
    ms without), which a line, with no torch in it, never sees. Each call costs a pipe round trip, measured and
    reported (``torch_ways_round_trip_ms``), which counts against the torch ways."""

    def __init__(self, checkpoint: Path, frame: FrameSpec, frames: list[np.ndarray]) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=serve_torch_ways, args=(child, checkpoint, frame, frames), daemon=True)

    def __enter__(self) -> TorchWays:
        self._process.start()
        self.names: list[str] = self._connection.recv()
        return self

    def call(self, name: str, index: int) -> None:
        self._connection.send((name, index))
        self._connection.recv()

    def round_trip_ms(self, calls: int = 200) -> float:
        """The median cost of one call that runs nothing."""
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            self.call("round trip", 0)
            times.append((time.perf_counter() - started) * 1e3)
        return float(np.median(times))

    def __exit__(self, *exc) -> None:
        self._connection.send(None)
        self._process.join(timeout=30)


def artefacts(
    checkpoint: Path, frame: FrameSpec, batch: int, calibration: Path | None, folder: Path
) -> tuple[Path, Path | None]:
    """The FP32 export and, with calibration images, the INT8 one, for batches up to ``batch``."""
    frame = replace(frame, max_batch=batch)
    fp32 = folder / f"fp32-batch{batch}.onnx"
    export_artefact(checkpoint, fp32, frame, "fp32")
    if calibration is None:
        return fp32, None
    int8 = folder / f"int8-batch{batch}.onnx"
    export_int8(checkpoint, int8, frame, calibration)
    return fp32, int8


@contextlib.contextmanager
def opened(ways: list[tuple[str, Path, dict, str]]) -> Iterator[dict[str, Engine]]:
    """Every way's engine, activated, by name; deactivated on leaving."""
    engines = {name: open_engine(path, **settings) for name, path, settings, _ in ways}
    try:
        for engine in engines.values():
            engine.activate()
        yield engines
    finally:
        for engine in engines.values():
            engine.deactivate()


def speedups(timing: dict, reference: str, fastest: str) -> dict:
    """How many times faster ``fastest`` is than ``reference``, per round: median, lowest and highest."""
    ratios = np.array(timing[reference]["round_p50"]) / np.array(timing[fastest]["round_p50"])
    return {
        "median": round(float(np.median(ratios)), 2),
        "low": round(float(ratios.min()), 2),
        "high": round(float(ratios.max()), 2),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--calibration-images", type=Path, help="good parts for the INT8 rows (without: no INT8)")
    parser.add_argument("--frames", type=int, default=50, help="calls per way and batch size")
    parser.add_argument("--batch", type=int, default=8, help="the batched measurement's batch size")
    parser.add_argument("--frame-size", type=int, default=0, help="square frame side (default: model size)")
    parser.add_argument("--pixel-format", default="rgb8", choices=["rgb8", "mono8", "bgr8"])
    parser.add_argument("--rounds", type=int, default=5, help="rounds the CPU ways take in turns")
    parser.add_argument("--no-pipeline", action="store_true", help="engine time only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    model, payload = load_model(args.checkpoint)
    size = args.frame_size or model.config.image_size
    frame = FrameSpec(size, size, args.pixel_format, max_batch=args.batch)
    frames = random_frames(frame, 1, count=args.frames)
    deployed = DeployableGraph(model, frame, "fp32").eval()
    rows, pipelines = [], {}
    with tempfile.TemporaryDirectory() as tmp, TorchWays(args.checkpoint, frame, frames) as torch_ways:
        runs = {name: (partial(torch_ways.call, name), list(range(len(frames)))) for name in torch_ways.names}
        # Each batch size runs artefacts exported for it, as a line would: batch 1 from a static batch-1 graph.
        exports = {
            size: artefacts(args.checkpoint, frame, size, args.calibration_images, Path(tmp))
            for size in (1, args.batch)
        }
        ways = cpu_ways(*exports[1])
        precision = {name: p for name, _, _, p in ways}
        with opened(ways) as engines:
            runs |= {name: (engine.infer, frames) for name, engine in engines.items()}
            batch_one = interleaved(runs, args.frames, args.rounds)
        round_trip = torch_ways.round_trip_ms()
        with opened(cpu_ways(*exports[args.batch])) as engines:
            batched = interleaved(
                {n: (e.infer, random_frames(e.frame, args.batch)) for n, e in engines.items()},
                max(1, args.frames // args.batch),
                args.rounds,
            )
        for name, stats in batch_one.items():
            rows.append(row(name, 1, stats, precision.get(name, "fp32")))
        for name, stats in batched.items():
            rows.append(row(name, args.batch, stats, precision[name]))
        if not args.no_pipeline:
            for name, path, settings, _ in ways:
                paced = round(0.7 * 1e3 / batch_one[name]["p50"], 2)  # a camera at 70 % of the way's batch-1 rate
                stages = bench_pipeline(path, args.frames, 1, fps=paced, settings=settings)
                pipelines[name] = stages["stages_ms"]["receive_to_publish"]
    if torch.cuda.is_available():
        rows += gpu_rows(args.checkpoint, model, frame, frames, args.batch)
    reduced = [n for n in batch_one if precision.get(n) in ("bf16", "int8")]
    result = {
        "machine": machine(),
        "checkpoint": str(args.checkpoint),
        "model": payload["model"],
        "frame": list(frame.frame_shape()),
        "rounds": args.rounds,
        "rows": rows,
        "received_to_sent_ms": pipelines,
        "torch_ways_round_trip_ms": round(round_trip, 4),
        "floor": floor(deployed, frame, args.batch, rows),
    }
    if reduced:
        fastest = min(reduced, key=lambda n: batch_one[n]["p50"])
        result["fastest_reduced_precision"] = fastest
        result["speedup"] = {
            f"vs {name}": speedups(batch_one, name, fastest)
            for name in ("authors' way, torch CPU", "ONNX Runtime FP32")
            if name in batch_one
        }
    text = markdown(result)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.json").write_text(json.dumps(result, indent=2))
        (args.out / "compare.md").write_text(text)
    return 0


def gpu_rows(checkpoint: Path, model, frame: FrameSpec, frames: list[np.ndarray], batch: int) -> list[dict]:
    """The authors' way and the folded graph in torch FP32/FP16 with CUDA graphs, on the GPU."""
    gpu = torch.device("cuda")
    sync = torch.cuda.synchronize
    inputs = [f for f in frames]
    batches = [np.concatenate(frames[i : i + batch]) for i in range(0, len(frames) - batch + 1, batch)] or inputs
    reference = ReferenceMemSeg(load_model(checkpoint)[0], gpu)
    rows = [row("authors' way, torch GPU", 1, percentiles(timed(lambda f: reference(f[0]), inputs, sync=sync)))]
    for precision in ("fp32", "fp16"):
        graphed = GraphedModule(DeployableGraph(model, frame, precision).eval().to(gpu), gpu)
        for size, data in ((1, inputs), (batch, batches)):
            times = timed(graphed, data, sync=sync)
            rows.append(row(f"folded graph, torch GPU {precision} + CUDA graph", size, percentiles(times), precision))
    return rows


def floor(deployed: DeployableGraph, frame: FrameSpec, batch: int, rows: list[dict]) -> dict:
    """The roofline per frame for each precision and batch size, and each row's fraction of it. The bytes are the
    FP32 graph's (a lower precision reads fewer: its floor is, if anything, lower still); the FLOPs are the whole
    graph's at the precision's peak, so an INT8 way, whose FP32 islands run slower, cannot reach 1."""
    flops = flops_per_frame(deployed, frame)
    peaks = cpu_peaks()
    bandwidth = peak_bandwidth(torch.device("cpu"))
    result = {"gflop_per_frame": round(flops / 1e9, 3), "cpu_peak_gb_per_s": round(bandwidth, 1)}
    result |= {f"cpu_peak_gops_{name}": round(value, 1) for name, value in peaks.items()}
    traffic = {size: bytes_per_frame(deployed, frame, size) for size in (1, batch)}
    limits = {}
    for name, peak in peaks.items():
        for size, data in traffic.items():
            limits[(name, size)] = roofline(flops, data, peak, bandwidth)
            result[f"cpu_floor_ms_{name}_batch_{size}"] = round(limits[(name, size)], 3)
    for r in rows:
        limit = limits.get((r["precision"], r["batch"]))
        if limit is not None and "GPU" not in r["way"]:
            r["fraction_of_floor"] = round(limit / (r["p50"] / r["batch"]), 3)
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        half = DeployableGraph(deployed.model, frame, "fp16").eval()
        gflops, gbs = peak_gflops(gpu, torch.float16), peak_bandwidth(gpu)
        result |= {"gpu_peak_gflops_fp16": round(gflops, 1), "gpu_peak_gb_per_s": round(gbs, 1)}
        for size in (1, batch):
            result[f"gpu_floor_ms_fp16_batch_{size}"] = round(
                roofline(flops, bytes_per_frame(half, frame, size), gflops, gbs), 4
            )
    return result


def markdown(result: dict) -> str:
    """The table of every way side by side, the floor, and the speed-ups."""
    m = result["machine"]
    lines = [
        f"{m['date']}, {m['cpu']} ({', '.join(m['cpu_flags'])}), {m['cores']} cores; {result['model']}, frame "
        f"{'x'.join(map(str, result['frame']))}; {result['rounds']} rounds in turns",
        "",
        "| way | batch | p50 ms/batch | p99 ms/batch | round p50 spread | frames/s | fraction of floor | "
        "received → sent p50 / p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        spread = f"{min(r['round_p50']):.2f}–{max(r['round_p50']):.2f}" if "round_p50" in r else ""
        sent = result["received_to_sent_ms"].get(r["way"]) if r["batch"] == 1 else None
        latency = f"{sent['p50']:.2f} / {sent['p99']:.2f}" if sent else ""
        fraction = f"{r['fraction_of_floor']:.2f}" if "fraction_of_floor" in r else ""
        lines.append(
            f"| {r['way']} | {r['batch']} | {r['p50']:.2f} | {r['p99']:.2f} | {spread} | {r['frames_per_s']:.1f} | "
            f"{fraction} | {latency} |"
        )
    lines += ["", f"floor: {json.dumps(result['floor'])}"]
    if "speedup" in result:
        ratios = "; ".join(f"{k} {v['median']}× ({v['low']}–{v['high']})" for k, v in result["speedup"].items())
        lines.append(f"fastest reduced precision: {result['fastest_reduced_precision']}; per round: {ratios}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
