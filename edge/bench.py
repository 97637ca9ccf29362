"""``edge-bench``: how fast an engine runs alone, and how fast the whole line delivers verdicts.

Engine only: random uint8 frames (never zeros), warm-up, then latency per batch (p50/p90/p99/max, jitter) and
throughput for each batch size. Pipeline: a looping folder of frames through the real pipeline at full rate (the
engine alone timed again after it), then paced like a camera at 70 % of the engine's rate in rounds that take turns
with the engine alone called at that pace; verdicts received by a subscriber in another process; per stage (queue,
infer, score), frame received → verdict sent, and frame captured → verdict received. Results as JSON, a Markdown
table, and PNG plots.

Side by side (several artefacts, backends or OpenVINO precisions in one run): every way is activated at once and
timed in rounds that take turns on the same frames, so that a change in the machine's load hits every way alike;
the spread of the per-round medians is reported with the numbers, and ratios are taken within one run.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.engines import Engine, EngineError, open_engine
from edge.sidecar import FrameSpec
from edge.sources.pacing import Pacer

log = logging.getLogger(__name__)


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


def random_frames(frame: FrameSpec, batch: int, count: int = 4, seed: int = 0) -> list[np.ndarray]:
    """``count`` batches of random uint8 frames of ``frame``'s shape (never zeros: some graphs shortcut them)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (batch, *frame.frame_shape()), dtype=np.uint8) for _ in range(count)]


def bench_engine(engine: Engine, batch: int, frames: int, warmup: int = 5, seed: int = 0, fps: float = 0.0) -> dict:
    """Latency of ``engine.infer`` at one batch size over about ``frames`` frames: back to back, or with ``fps``
    called at that many frames a second, as a camera paces the line (an engine idle between calls may run slower)."""
    inputs = random_frames(engine.frame, batch, seed=seed)
    for i in range(warmup):
        engine.infer(inputs[i % 4])
    times = []
    pacer = Pacer(fps / batch)
    for i in range(max(1, frames // batch)):
        pacer.wait()
        started = time.perf_counter()
        engine.infer(inputs[i % 4])
        times.append((time.perf_counter() - started) * 1e3)
    stats = percentiles(times)
    # frames/s: what the engine could deliver at this latency, not the pace it was called at
    return {"batch": batch, "fps": fps, "latency_ms": stats, "frames_per_s": batch * 1e3 / float(np.mean(times))}


def interleaved(runs: dict[str, tuple[Callable, list]], calls: int, rounds: int = 5, warmup: int = 3) -> dict:
    """Latency in ms of each ``name → (run, inputs)``, ``calls`` calls each, in ``rounds`` rounds that take turns, so
    that a change in the machine's load hits every run alike. Per name: percentiles over all calls, and the
    median of each round (their spread is the run-to-run noise)."""
    for run, inputs in runs.values():
        for i in range(warmup):
            run(inputs[i % len(inputs)])
    times: dict[str, list[float]] = {name: [] for name in runs}
    medians: dict[str, list[float]] = {name: [] for name in runs}
    per_round = max(1, calls // rounds)
    for _ in range(rounds):
        for name, (run, inputs) in runs.items():
            chunk = []
            for i in range(per_round):
                started = time.perf_counter()
                run(inputs[i % len(inputs)])
                chunk.append((time.perf_counter() - started) * 1e3)
            times[name] += chunk
            medians[name].append(float(np.median(chunk)))
    return {name: {**percentiles(times[name]), "round_p50": medians[name]} for name in runs}


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
                              "t_receive_ns": message["t_receive_ns"],
                              "t_publish_ns": message["t_publish_ns"], "t_received_ns": received,
                              "latency_ms": message["latency_ms"], "verdict": message["verdict"]}) + "\n")
out.close()
"""


def _free_endpoint() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def bench_pipeline(engine_path: Path, frames: int, batch: int, fps: float = 0.0, **line) -> dict:
    """:func:`line_rows`' run of the line (``line``: its ``endpoint``, ``camera``, ``settings``, ``records``) as
    per-stage and end-to-end percentiles."""
    rows, seconds = line_rows(engine_path, frames, batch, fps, **line)
    return _pipeline_stats([rows], seconds, batch, fps, line.get("records", False))


def bench_paced(
    engine_path: Path, frames: int, fps: float, settings: dict | None = None, records: bool = False, rounds: int = 4
) -> dict:
    """The line paced like a camera at ``fps`` (batch 1) against the engine alone called at the same pace, in
    ``rounds`` rounds of ``frames / rounds`` frames each; within a round one runs right after the other, first the
    engine alone, then the line, the other way round in the next, so that a machine whose speed drifts hits both
    alike. :func:`bench_pipeline`'s result over all rounds, and per round both p50s and their difference."""
    settings, per_round = settings or {}, max(1, frames // rounds)

    def alone() -> float:
        with open_engine(engine_path, **_engine_arguments(settings)) as engine:
            return bench_engine(engine, 1, per_round, fps=fps)["latency_ms"]["p50"]

    def line() -> tuple[list[dict], float]:
        return line_rows(engine_path, per_round, 1, fps, settings=settings, records=records)

    runs, seconds, turns = [], 0.0, []
    for turn in range(rounds):
        if turn % 2:  # the line first
            rows, took = line()
            alone_p50 = alone()
        else:
            alone_p50 = alone()
            rows, took = line()
        runs.append(rows)
        seconds += took
        stages = _pipeline_stats([rows], took, 1, fps, records)["stages_ms"]
        turns.append(
            {
                "engine_alone_p50": alone_p50,
                "receive_to_publish_p50": stages["receive_to_publish"]["p50"],
                "infer_p50": stages["infer"]["p50"],
                "added_p50": stages["receive_to_publish"]["p50"] - alone_p50,
            }
        )
    return {**_pipeline_stats(runs, seconds, 1, fps, records), "rounds": turns}


def line_rows(
    engine_path: Path,
    frames: int,
    batch: int,
    fps: float = 0.0,
    endpoint: str | None = None,
    camera: str | None = None,
    settings: dict | None = None,
    records: bool = False,
) -> tuple[list[dict], float]:
    """One run of the real pipeline with a subscriber process: at full rate (``fps`` 0: files as fast as the line
    takes them, for throughput) or paced like a camera at ``fps`` (for latency). With ``camera`` (a source URI such
    as ``basler0``) the frames come from that source at its own pace instead. ``settings`` are the engine's
    (``backend``, ``inference_precision``, ``threads``, ``openvino_cache``). ``records``: the line keeps what a
    station usually keeps besides publishing: a JSON-lines file of every verdict, reject records and heatmaps (the
    generated noise frames all fail: the most work per frame). Returns what the subscriber received of each verdict,
    and the run's wall seconds."""
    from edge.config import StationConfig
    from edge.run import run_station

    endpoint = endpoint or _free_endpoint()
    settings = settings or {}
    with open_engine(engine_path, **_engine_arguments(settings)) as engine:
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
            # preload: frames from memory, as a camera delivers them (decoding 16 noise PNGs would be timed instead)
            camera=camera or f"folder://{folder}?loop=1&preload=1" + (f"&fps={fps}" if fps else ""),
            station="bench",
            publish=endpoint,
            threshold=0.5,
            max_batch=batch,
            max_frames=frames,
            queue_size=max(8, 4 * batch),
            wait_subscribers=1,
            wait_timeout=30,
            **(
                {"jsonl": f"{folder}/verdicts.jsonl", "rejects": f"{folder}/rejects", "heatmaps": True}
                if records
                else {}
            ),
            **settings,
        )
        started = time.perf_counter()
        run_station(config)
        seconds = time.perf_counter() - started
        subscriber.wait(timeout=60)
        return [json.loads(line) for line in received.read_text().splitlines()], seconds


def _pipeline_stats(parts: list[list[dict]], seconds: float, batch: int, fps: float, records: bool) -> dict:
    """Per stage and end to end over the received verdicts of one or more runs (``parts``)."""
    rows = [r for part in parts for r in part]
    stages = {
        k: percentiles([r["latency_ms"][k] for r in rows if r["latency_ms"][k] is not None])
        for k in ("queue", "infer", "score", "total")
    }
    stages["receive_to_publish"] = percentiles([(r["t_publish_ns"] - r["t_receive_ns"]) / 1e6 for r in rows])
    stages["publish_to_subscriber"] = percentiles([(r["t_received_ns"] - r["t_publish_ns"]) / 1e6 for r in rows])
    stages["capture_to_subscriber"] = percentiles([(r["t_received_ns"] - r["t_capture_ns"]) / 1e6 for r in rows])
    # Throughput from each run's first frame captured to its last verdict published: the run's wall time also holds
    # the engine's start (on a GPU, a CUDA graph captured per batch size) and the wait for the subscriber.
    span_s = sum((max(r["t_publish_ns"] for r in p) - min(r["t_capture_ns"] for r in p)) / 1e9 for p in parts)
    return {
        "batch": batch,
        "fps": fps,
        "records": records,
        "failed": sum(r["verdict"] == "fail" for r in rows),
        "frames": len(rows),
        "seconds": seconds,
        "span_s": span_s,
        "frames_per_s": len(rows) / span_s,
        "stages_ms": stages,
    }


# The CPU flags that decide which arithmetic is fast: AVX-512 and AVX2 for FP32, VNNI for INT8, BF16 and AMX.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def cpu_description() -> tuple[str, list[str]]:
    """The CPU's model name and its speed-relevant flags, from ``/proc/cpuinfo`` where there is one."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return name, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return name, [f for f in SPEED_FLAGS if f in flags]


def machine() -> dict:
    name, flags = cpu_description()
    return {
        "host": platform.node(),
        "cpu": name,
        "cpu_flags": flags,
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
    rows = list(result["engine_only"])
    if result.get("engine_alone_after_line"):
        rows.append({**result["engine_alone_after_line"], "batch": "1, after the line"})
    for r in rows:
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
            + (f" (source {p['fps']} fps)" if p["fps"] else "")
            + (f"; with JSON lines, rejects and heatmaps, {p['failed']} failed" if p.get("records") else ""),
            "",
            "| stage | p50 ms | p99 ms | max ms |",
            "| --- | --- | --- | --- |",
        ]
        for name, s in p["stages_ms"].items():
            lines.append(f"| {name} | {s['p50']:.2f} | {s['p99']:.2f} | {s['max']:.2f} |")
        if p.get("rounds"):
            lines += [
                "",
                "In turns with the engine alone paced alike, per round (p50 ms):",
                "",
                "| round | engine alone | line: receive → publish | line: infer | line − engine alone |",
                "| --- | --- | --- | --- | --- |",
            ]
            for i, r in enumerate(p["rounds"], 1):
                lines.append(
                    f"| {i} | {r['engine_alone_p50']:.2f} | {r['receive_to_publish_p50']:.2f} | "
                    f"{r['infer_p50']:.2f} | {r['added_p50']:+.2f} |"
                )
    return "\n".join(lines) + "\n"


def plots(result: dict, folder: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        log.warning("plots skipped: matplotlib not installed (pip install 'edge-inspect[reports]')")
        return

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


def _engine_arguments(settings: dict) -> dict:
    """:func:`open_engine`'s keyword arguments from station settings (``backend``, ``openvino_cache``, …)."""
    from edge.config import StationConfig

    return StationConfig(engine="-", camera="-", **settings).engine_settings()


def run_bench(
    engine_path: Path,
    batches: list[int],
    frames: int,
    pipeline: bool,
    out: Path | None,
    camera: str | None = None,
    settings: dict | None = None,
    records: bool = False,
) -> dict:
    """One artefact on one backend: the engine alone per batch size, and the pipeline at full rate and paced
    (``records``: with a station's records, :func:`bench_pipeline`)."""
    settings = settings or {}
    engine = open_engine(engine_path, **_engine_arguments(settings))
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
        result["pipeline_paced"] = bench_pipeline(
            engine_path, frames, max(usable), camera=camera, settings=settings, records=records
        )
    elif pipeline:
        result["pipeline"] = bench_pipeline(engine_path, frames, max(usable), settings=settings, records=records)
        # The engine alone again, so that the full-rate run is bracketed: a machine whose speed drifts between
        # measurements (a shared host) shows it here instead of in the line's share of the engine.
        with open_engine(engine_path, **_engine_arguments(settings)) as engine:
            result["engine_alone_after_line"] = bench_engine(engine, 1, frames)
        paced = round(0.7 * result["engine_alone_after_line"]["frames_per_s"], 2)  # 70 % of the batch-1 capacity
        result["pipeline_paced"] = bench_paced(engine_path, frames, paced, settings, records)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(result, indent=2))
        (out / "bench.md").write_text(markdown(result))
        plots(result, out)
    return result


@dataclass(frozen=True)
class Way:
    """One artefact on one backend, with its engine settings (``backend``, ``inference_precision``, …)."""

    engine: Path
    settings: dict = field(default_factory=dict)


def ways_from(engines: list[Path], backends: list[str], precisions: list[str]) -> list[Way]:
    """Every artefact on every backend that runs it, and on OpenVINO in every precision of ``precisions``."""
    from edge.engines import BACKENDS, backend_names

    unknown = [b for b in backends if b not in backend_names()]
    if unknown:
        raise EngineError(f"backend {', '.join(unknown)}: use {', '.join(backend_names())}")
    ways = []
    for path in engines:
        for backend in backends:
            if backend != "auto" and Path(path).suffix.lower() not in BACKENDS[backend].suffixes:
                continue
            for precision in precisions if backend == "openvino" else [None]:
                ways.append(Way(Path(path), {"backend": backend, "inference_precision": precision}))
    if not ways:
        raise EngineError(f"none of the backends {', '.join(backends)} runs {', '.join(str(e) for e in engines)}")
    return ways


def way_name(engine: Engine) -> str:
    """``memseg.onnx, openvino bf16``: the artefact, the backend and the arithmetic."""
    precision = getattr(engine, "inference_precision", None)
    arithmetic = "bf16" if precision == "bf16" else engine.sidecar.precision
    return f"{engine.path.name}, {engine.backend} {arithmetic}"


def run_ways(
    ways: list[Way], batches: list[int], frames: int, pipeline: bool, out: Path | None, rounds: int = 5
) -> dict:
    """Several ways side by side in one run: engines timed in turns per batch size, then each way's pipeline paced
    like a camera at 70 % of its own batch-1 rate (frame received → verdict sent)."""
    engines: dict[str, tuple[Way, Engine]] = {}
    try:
        for way in ways:
            engine = open_engine(way.engine, **_engine_arguments(way.settings))
            engine.activate()
            engines[way_name(engine)] = (way, engine)
        usable = [b for b in batches if all(b <= e.frame.max_batch for _, e in engines.values())]
        if not usable:
            raise EngineError(f"batch sizes {batches} exceed the maximum batch of one of the artefacts")
        timing = {
            batch: interleaved(
                {name: (e.infer, random_frames(e.frame, batch)) for name, (_, e) in engines.items()},
                max(1, frames // batch),
                rounds,
            )
            for batch in usable
        }
    finally:
        for _, engine in engines.values():
            engine.deactivate()
    result = {"machine": machine(), "rounds": rounds, "ways": []}
    for name, (way, engine) in engines.items():
        rows = [
            {"batch": b, "latency_ms": timing[b][name], "frames_per_s": b * 1e3 / timing[b][name]["p50"]}
            for b in usable
        ]
        entry = {"name": name, "engine": str(way.engine), "backend": engine.backend, "engine_only": rows}
        if pipeline:
            paced = round(0.7 * rows[0]["frames_per_s"], 2)
            entry["pipeline_paced"] = bench_pipeline(way.engine, frames, 1, fps=paced, settings=way.settings)
        result["ways"].append(entry)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(result, indent=2))
        (out / "bench.md").write_text(ways_markdown(result))
    return result


def ways_markdown(result: dict) -> str:
    """One table, every way and batch size side by side."""
    m = result["machine"]
    lines = [
        f"# edge-bench side by side: {m['date']}, {m['cpu']}, {m['cores']} cores, {result['rounds']} rounds in turns",
        "",
        "| way | batch | p50 ms | p99 ms | frames/s | round p50 spread ms | received → sent p50 / p99 ms (paced) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for way in result["ways"]:
        paced = way.get("pipeline_paced")
        sent = paced["stages_ms"]["receive_to_publish"] if paced else None
        for row in way["engine_only"]:
            s = row["latency_ms"]
            spread = f"{min(s['round_p50']):.2f}–{max(s['round_p50']):.2f}"
            latency = f"{sent['p50']:.2f} / {sent['p99']:.2f}" if sent and row["batch"] == 1 else ""
            lines.append(
                f"| {way['name']} | {row['batch']} | {s['p50']:.2f} | {s['p99']:.2f} | {row['frames_per_s']:.1f} | "
                f"{spread} | {latency} |"
            )
    return "\n".join(lines) + "\n"
