"""Soak: the whole pipeline at the camera's top rate for a long time, with subscribers coming and going.

Runs ``edge-run`` on pylon's emulated camera (or any ``--camera``) in a subprocess, keeps one steady subscriber
and churns others, and records once a minute: frames, verdicts, errors by reason (from the heartbeats), RSS,
open file descriptors and threads of the station process, and the steady subscriber's latency percentiles and
missing verdicts. Passes when no verdict was lost (frames = verdicts at the end, no gap in ``seq``) and the
resource curves stay flat.

    PYLON_CAMEMU=1 python -m benchmarks.soak --engine runs/demo/memseg.onnx --images runs/demo/camera --minutes 60
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edge.client import VerdictSubscriber


def free_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def process_stats(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def churn(endpoint: str, stop: threading.Event, rng: random.Random) -> None:
    """Subscribers that join, read a while, and leave (sometimes without reading at all)."""
    while not stop.is_set():
        subscriber = VerdictSubscriber(endpoint)
        until = time.monotonic() + rng.uniform(2, 10)
        reads = rng.random() > 0.3
        while time.monotonic() < until and not stop.is_set():
            subscriber.poll(0.2) if reads else time.sleep(0.2)
        subscriber.close()
        stop.wait(rng.uniform(0.5, 3))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", required=True)
    parser.add_argument("--images", help="folder the emulated camera streams (with --camera basler0)")
    parser.add_argument("--camera", default="basler0")
    parser.add_argument("--trigger", default="free")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--out", type=Path, help="JSON lines, one per minute, and the verdict")
    args = parser.parse_args(argv)
    endpoint = free_endpoint()
    entry = "import sys; from edge.cli import run_main; sys.exit(run_main(sys.argv[1:]))"
    command = [
        sys.executable,
        "-c",
        entry,
        "--engine",
        args.engine,
        "--camera",
        args.camera,
        "--trigger",
        args.trigger,
        "--publish",
        endpoint,
        "--wait-subscribers",
        "1",
        "--queue-size",
        "8",
    ]
    if args.images:
        command += ["--emulator-images", str(Path(args.images).resolve())]
    if args.threshold is not None:
        command += ["--threshold", str(args.threshold)]
    steady = VerdictSubscriber(endpoint)
    station = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    churner = threading.Thread(target=churn, args=(endpoint, stop, random.Random(0)), daemon=True)
    churner.start()
    rows, latencies, last_heartbeat, final = [], [], {}, None
    started = time.monotonic()
    next_report = started + 60
    out = open(args.out, "w") if args.out else None  # noqa: SIM115
    try:
        while time.monotonic() - started < args.minutes * 60 and station.poll() is None:
            for kind, payload in steady.poll(0.5):
                if kind == "verdict" and payload["latency_ms"]["total"] is not None:
                    latencies.append(payload["latency_ms"]["total"])
                elif kind == "heartbeat":
                    last_heartbeat = payload["counters"]
            if time.monotonic() >= next_report:
                next_report += 60
                row = {
                    "minute": round((time.monotonic() - started) / 60),
                    **process_stats(station.pid),
                    **{k: last_heartbeat.get(k) for k in ("frames", "verdicts", "pass", "fail", "errors")},
                    "missing": steady.state.missing,
                }
                if latencies:
                    row |= {f"p{q}": round(float(np.percentile(latencies, q)), 2) for q in (50, 99)}
                latencies.clear()
                rows.append(row)
                print(json.dumps(row), flush=True)
                if out:
                    out.write(json.dumps(row) + "\n")
                    out.flush()
        station.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while final is None and time.monotonic() < deadline:
            for kind, payload in steady.poll(0.5):
                if kind == "status" and payload.get("final"):
                    final = payload["counters"]
        station.wait(timeout=30)
    finally:
        stop.set()
        steady.close()
        if station.poll() is None:
            station.kill()
    flat = len(rows) < 3 or (
        rows[-1]["rss_mb"] <= 1.1 * rows[1]["rss_mb"] + 20
        and rows[-1]["fds"] <= rows[1]["fds"] + 2
        and rows[-1]["threads"] <= rows[1]["threads"] + 2
    )
    lost = final is None or final["frames"] != final["verdicts"] or steady.state.missing > 0
    verdict = {
        "minutes": args.minutes,
        "final_counters": final,
        "missing_on_steady_subscriber": steady.state.missing,
        "resources_flat": flat,
        "passed": bool(flat and not lost),
        "exit_code": station.returncode,
    }
    print(json.dumps(verdict), flush=True)
    if out:
        out.write(json.dumps(verdict) + "\n")
        out.close()
    return 0 if verdict["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
