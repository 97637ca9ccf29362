"""``edge-bench``: how fast an engine runs alone, and how fast the whole line delivers verdicts.

Engine only: random uint8 frames (never zeros), warm-up, then latency per batch (p50/p90/p99/max, jitter) and
throughput for each batch size. Pipeline: a looping folder of frames through the real pipeline at full rate,
verdicts received by a subscriber in another process; per stage (queue, infer, score) and frame captured →
verdict received. Results as JSON, a Markdown table, and PNG plots.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edge.engines import Engine, open_engine


def percentiles(values_ms: list[float]) -> dict:
    v = np.asarray(values_ms, np.float64)
    return {
        "p50": float(np.percentile(v, 50)),
        "p90": float(np.percentile(v, 90)),
        "p99": float(np.percentile(v, 99)),
        "max": float(v.max()),
        "jitter_std": float(v.std()),
        "n": int(v.size),
    }


def bench_engine(engine: Engine, batch: int, frames: int, warmup: int = 5, seed: int = 0) -> dict:
    """Latency of ``engine.infer`` at one batch size over about ``frames`` frames."""
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(0, 256, (batch, *engine.frame.frame_shape()), dtype=np.uint8) for _ in range(4)]
    for i in range(warmup):
        engine.infer(inputs[i % 4])
    times = []
    for i in range(max(1, frames // batch)):
        started = time.perf_counter()
        engine.infer(inputs[i % 4])
        times.append((time.perf_counter() - started) * 1e3)
    stats = percentiles(times)
    return {"batch": batch, "latency_ms": stats, "frames_per_s": batch * 1e3 / float(np.mean(times))}


SUBSCRIBER = r"""
import json, sys, time, zmq
sock = zmq.Context.instance().socket(zmq.SUB)
sock.setsockopt(zmq.SUBSCRIBE, b"verdict/")
sock.setsockopt(zmq.SUBSCRIBE, b"status/")
sock.connect(sys.argv[1])
out = open(sys.argv[2], "w")
while sock.poll(60000):
    topic, data = sock.recv_multipart()
    received = time.time_ns()
    message = json.loads(data)
    if message.get("final"):
        break
    if message["kind"] == "verdict":
        out.write(json.dumps({"seq": message["seq"], "t_capture_ns": message["t_capture_ns"],
                              "t_publish_ns": message["t_publish_ns"], "t_received_ns": received,
                              "latency_ms": message["latency_ms"], "verdict": message["verdict"]}) + "\n")
out.close()
"""


def _free_endpoint() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def bench_pipeline(
    engine_path: Path, frames: int, batch: int, fps: float = 0.0, endpoint: str | None = None, camera: str | None = None
) -> dict:
    """The real pipeline with a subscriber process: at full rate (``fps`` 0: files as fast as the line takes
    them, for throughput) or paced like a camera at ``fps`` (for latency); per stage and end to end. With
    ``camera`` (a source URI such as ``basler0``) the frames come from that source at its own pace instead."""
    from edge.config import StationConfig
    from edge.run import run_station

    endpoint = endpoint or _free_endpoint()
    with open_engine(engine_path) as engine:
        shape = engine.frame.frame_shape()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as folder:
        for i in range(0 if camera else 16):
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            cv2.imwrite(os.path.join(folder, f"{i:03d}.png"), image if image.ndim == 2 else image[..., ::-1])
        received = Path(folder) / "received.jsonl"
        subscriber = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, endpoint, str(received)])
        config = StationConfig(
            engine=str(engine_path),
            camera=camera or f"folder://{folder}?loop=1" + (f"&fps={fps}" if fps else ""),
            station="bench",
            publish=endpoint,
            threshold=0.5,
            max_batch=batch,
            max_frames=frames,
            queue_size=max(8, 4 * batch),
            wait_subscribers=1,
            wait_timeout=30,
        )
        started = time.perf_counter()
        run_station(config)
        seconds = time.perf_counter() - started
        subscriber.wait(timeout=60)
        rows = [json.loads(line) for line in received.read_text().splitlines()]
    stages = {
        k: percentiles([r["latency_ms"][k] for r in rows if r["latency_ms"][k] is not None])
        for k in ("queue", "infer", "score", "total")
    }
    stages["publish_to_subscriber"] = percentiles([(r["t_received_ns"] - r["t_publish_ns"]) / 1e6 for r in rows])
    stages["capture_to_subscriber"] = percentiles([(r["t_received_ns"] - r["t_capture_ns"]) / 1e6 for r in rows])
    return {
        "batch": batch,
        "fps": fps,
        "frames": len(rows),
        "seconds": seconds,
        "frames_per_s": len(rows) / seconds,
        "stages_ms": stages,
    }


def machine() -> dict:
    return {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def markdown(result: dict) -> str:
    lines = [
        f"# edge-bench: {result['engine']} ({result['backend']}, {result['precision']})",
        "",
        f"{result['machine']['date']}, {result['machine']['cpu']}, {result['machine']['cores']} cores",
        "",
        "## Engine only",
        "",
        "| batch | p50 ms | p90 ms | p99 ms | max ms | jitter ms | frames/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["engine_only"]:
        s = r["latency_ms"]
        lines.append(
            f"| {r['batch']} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p99']:.2f} | {s['max']:.2f} | "
            f"{s['jitter_std']:.2f} | {r['frames_per_s']:.1f} |"
        )
    for key, title in (("pipeline", "full rate (throughput)"), ("pipeline_paced", "camera-paced (latency)")):
        if not result.get(key):
            continue
        p = result[key]
        lines += [
            "",
            f"## Pipeline, {title}: batch {p['batch']}, {p['frames']} frames, {p['frames_per_s']:.1f} frames/s"
            + (f" (source {p['fps']} fps)" if p["fps"] else ""),
            "",
            "| stage | p50 ms | p99 ms | max ms |",
            "| --- | --- | --- | --- |",
        ]
        for name, s in p["stages_ms"].items():
            lines.append(f"| {name} | {s['p50']:.2f} | {s['p99']:.2f} | {s['max']:.2f} |")
    return "\n".join(lines) + "\n"


def plots(result: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for r in result["engine_only"]:
        ax.plot(
            [r["latency_ms"]["p50"], r["latency_ms"]["p90"], r["latency_ms"]["p99"], r["latency_ms"]["max"]],
            [0.5, 0.9, 0.99, 1.0],
            marker="o",
            label=f"batch {r['batch']}",
        )
    ax.set_xlabel("latency per batch (ms)")
    ax.set_ylabel("fraction of batches")
    ax.set_title("engine latency (CDF points)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "latency_cdf.png")
    plt.close(fig)
    if result.get("pipeline_paced"):
        stages = result["pipeline_paced"]["stages_ms"]
        names = ["queue", "infer", "score", "publish_to_subscriber"]
        fig, ax = plt.subplots(figsize=(6, 3), dpi=110)
        ax.barh(names, [stages[n]["p50"] for n in names], label="p50")
        ax.barh(
            names,
            [stages[n]["p99"] - stages[n]["p50"] for n in names],
            left=[stages[n]["p50"] for n in names],
            alpha=0.5,
            label="p99",
        )
        ax.set_xlabel("ms")
        ax.set_title("pipeline stages, camera-paced")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "stages.png")
        plt.close(fig)


def run_bench(
    engine_path: Path, batches: list[int], frames: int, pipeline: bool, out: Path | None, camera: str | None = None
) -> dict:
    engine = open_engine(engine_path)
    with engine:
        usable = [b for b in batches if b <= engine.frame.max_batch]
        result = {
            "engine": engine_path.name,
            "backend": engine.backend,
            "precision": engine.sidecar.precision,
            "frame": engine.frame.frame_shape(),
            "machine": machine(),
            "engine_only": [bench_engine(engine, b, frames) for b in usable],
        }
    if pipeline and camera:
        result["pipeline_paced"] = bench_pipeline(engine_path, frames, max(usable), camera=camera)
    elif pipeline:
        result["pipeline"] = bench_pipeline(engine_path, frames, max(usable))
        paced = round(0.7 * result["engine_only"][0]["frames_per_s"], 2)  # a camera at 70 % of batch-1 capacity
        result["pipeline_paced"] = bench_pipeline(engine_path, frames, 1, fps=paced)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(result, indent=2))
        (out / "bench.md").write_text(markdown(result))
        plots(result, out)
    return result
