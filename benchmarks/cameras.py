"""Several cameras: one ``edge-run`` with one shared engine against one ``edge-run`` per camera, side by side.

For each camera count, both ways run on pylon's emulated cameras (``PYLON_CAMEMU`` is set to the largest count)
triggered by software at ``--fps`` each, ``--frames`` per camera, with a subscriber per camera in this process.
Reported per way: frames judged per second in total (pass or fail; the rest are ``overrun``: more parts than the
way could judge), overruns, received → published p50/p99 of the judged frames, and the peak resident memory of
the station processes together (sampled every 0.2 s from ``/proc``). The ways take turns per count.

    python -m benchmarks.cameras --engine runs/bench/patchcore4.onnx --images runs/bench/camera --threshold 25 \\
        --cameras 1,2,4 --fps 30 --frames 300 --out benchmarks/results/cameras
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.soak import free_endpoint
from edge.bench import machine
from edge.client import VerdictSubscriber
from edge.run import PORT_STEP, offset_endpoint

ENTRY = "import sys; from edge.cli import run_main; sys.exit(run_main(sys.argv[1:]))"


def rss_mb(pids: list[int]) -> float:
    """The resident memory of ``pids`` together, in MB (those that have exited count 0)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


def station_command(args, cameras: list[int], endpoint: str) -> list[str]:
    flags = [flag for i in cameras for flag in ("--camera", f"basler{i}")]
    return [
        sys.executable, "-c", ENTRY, "--engine", str(args.engine), *flags, "--trigger", "software",
        "--fps", str(args.fps), "--emulator-images", str(Path(args.images).resolve()), "--max-frames",
        str(args.frames), "--publish", endpoint, "--threshold", str(args.threshold), "--wait-subscribers", "1",
        "--station", "bench", "--batch-timeout-ms", str(args.batch_timeout_ms),
    ]  # fmt: skip


def free_block(count: int) -> str:
    """An endpoint whose port and those of the ``count - 1`` cameras after it are free."""
    import socket

    while True:
        endpoint = free_endpoint()
        port = int(endpoint.rsplit(":", 1)[1])
        try:
            probes = []
            for i in range(count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port + PORT_STEP * i))
            return endpoint
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()


def run_way(args, count: int, shared: bool) -> dict:
    """``count`` cameras in one process (``shared``) or one process each; returns the way's figures."""
    endpoint = free_block(count)
    endpoints = [offset_endpoint(endpoint, i) for i in range(count)]
    subscribers = [VerdictSubscriber(e) for e in endpoints]
    env = {**os.environ, "PYLON_CAMEMU": str(args.max_cameras)}
    if shared:
        commands = [station_command(args, list(range(count)), endpoint)]
    else:
        commands = [station_command(args, [i], endpoints[i]) for i in range(count)]
    processes = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in commands]
    verdicts, finished, peak = [], set(), 0.0
    next_sample = time.monotonic()
    deadline = time.monotonic() + args.frames / args.fps * 4 + 60
    try:
        while len(finished) < count and time.monotonic() < deadline:
            for i, subscriber in enumerate(subscribers):
                for kind, payload in subscriber.poll(0.01):
                    if kind == "verdict":
                        verdicts.append(payload)
                    elif kind == "status" and payload.get("final"):
                        finished.add(i)
            if time.monotonic() >= next_sample:
                peak = max(peak, rss_mb([p.pid for p in processes]))
                next_sample += 0.2
        for process in processes:
            process.wait(timeout=30)
    finally:
        for subscriber in subscribers:
            subscriber.close()
        for process in processes:
            if process.poll() is None:
                process.kill()
    judged = [v for v in verdicts if v["verdict"] in ("pass", "fail")]
    rate = 0.0  # per camera, its judged frames over its own span (processes start at different moments)
    for station in {v["station"] for v in verdicts}:
        own = [v for v in verdicts if v["station"] == station]
        span_s = (max(v["t_publish_ns"] for v in own) - min(v["t_capture_ns"] for v in own)) / 1e9
        rate += sum(v["verdict"] in ("pass", "fail") for v in own) / span_s
    latency = [(v["t_publish_ns"] - v["t_receive_ns"]) / 1e6 for v in judged]
    return {
        "cameras": count,
        "way": ("one process, shared engine" if count > 1 else "one process") if shared else "one process per camera",
        "verdicts": len(verdicts),
        "judged": len(judged),
        "overrun": sum(v["reason"] == "overrun" for v in verdicts),
        "judged_per_s": rate,
        "receive_to_publish_ms": {
            "p50": float(np.percentile(latency, 50)) if latency else None,
            "p99": float(np.percentile(latency, 99)) if latency else None,
        },
        "largest_batch": max((v["batch"] for v in verdicts), default=0),
        "peak_rss_mb": round(peak, 1),
        "exit_codes": [p.returncode for p in processes],
    }


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# Cameras on one engine and on one engine each: {m['date']}, {m['cpu']}, {m['cores']} cores",
        "",
        f"{result['fps']} parts/s per camera, {result['frames']} per camera, {result['engine']}",
        "",
        "| cameras | way | judged frames/s (all cameras) | overrun | received → published p50 / p99 ms | largest "
        "batch | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        latency = row["receive_to_publish_ms"]
        shown = f"{latency['p50']:.1f} / {latency['p99']:.1f}" if latency["p50"] is not None else "-"
        lines.append(
            f"| {row['cameras']} | {row['way']} | {row['judged_per_s']:.1f} | {row['overrun']} | {shown} | "
            f"{row['largest_batch']} | {row['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", type=Path, required=True, help="artefact with max batch ≥ the camera count")
    parser.add_argument("--images", required=True, help="folder the emulated cameras stream")
    parser.add_argument("--threshold", type=float, required=True)
    parser.add_argument("--cameras", default="1,2,4")
    parser.add_argument("--fps", type=float, default=30.0, help="software triggers per second, per camera")
    parser.add_argument("--frames", type=int, default=300, help="frames per camera")
    parser.add_argument("--batch-timeout-ms", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.cameras.split(",")]
    args.max_cameras = max(counts)
    rows = []
    for count in counts:
        for shared in (True, False) if count > 1 else (True,):
            rows.append(run_way(args, count, shared))
            print(json.dumps(rows[-1]), flush=True)
    result = {"machine": machine(), "engine": args.engine.name, "fps": args.fps, "frames": args.frames, "rows": rows}
    print(markdown(result))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cameras.json").write_text(json.dumps(result, indent=2))
        (args.out / "cameras.md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
