"""edge-run --metrics: /metrics scraped with an HTTP client during a run agrees with the verdicts a subscriber
receives; a bad or busy metrics address is one error line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client", reason="the bridge extra is not installed")

from edge.client import VerdictSubscriber  # noqa: E402

RUN = [sys.executable, "-c", "import sys; from edge.cli import run_main as m; sys.exit(m(sys.argv[1:]))"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in samples}


def test_metrics_scraped_during_a_run_agree_with_the_verdicts_received(onnx_engine: Path, part_folder: Path) -> None:
    endpoint, port = f"tcp://127.0.0.1:{free_port()}", free_port()
    subscriber = VerdictSubscriber(endpoint, "line", kinds=("verdict",))
    received: list[dict] = []
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            received.extend(payload for _, payload in subscriber.poll(0.05))

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    run = subprocess.Popen(
        [*RUN, "--engine", str(onnx_engine), "--camera", f"folder://{part_folder}?loop=1&fps=20"]
        + ["--publish", endpoint, "--station", "line", "--threshold", "0.5", "--max-frames", "160"]
        + ["--wait-subscribers", "1", "--metrics", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(received) < 60:
            assert run.poll() is None and time.monotonic() < deadline, run.stderr.read() if run.stderr else ""
            time.sleep(0.05)
        before = [dict(v) for v in received]
        metrics = scrape(port)
        time.sleep(1.0)  # what was published before the scrape has arrived by now
        after = [dict(v) for v in received]
        assert run.wait(timeout=60) == 0
    finally:
        stop.set()
        collector.join(5)
        subscriber.close()

    def count(verdicts: list[dict], **match) -> int:
        return sum(all(v.get(k) == want for k, want in match.items()) for v in verdicts)

    published = metrics['edge_verdicts_total{station="line",verdict="pass"}']
    assert count(before, verdict="pass") <= published <= count(after, verdict="pass")
    for kind in ("fail", "error"):
        value = metrics[f'edge_verdicts_total{{station="line",verdict="{kind}"}}']
        assert count(before, verdict=kind) <= value <= count(after, verdict=kind), kind
    for reason in ("unreadable_image", "frame_format"):  # the folder's broken and wrong-sized images
        value = metrics.get(f'edge_errors_total{{reason="{reason}",station="line"}}', 0)
        assert count(before, reason=reason) <= value <= count(after, reason=reason), reason
    total = sum(metrics[f'edge_verdicts_total{{station="line",verdict="{k}"}}'] for k in ("pass", "fail", "error"))
    assert metrics['edge_frames_total{station="line"}'] >= total >= 60
    assert len(before) <= metrics['edge_latency_seconds_count{station="line"}'] <= len(after)
    assert 10 <= metrics['edge_camera_fps{station="line"}'] <= 30  # the source runs at 20 frames/s
    assert metrics['edge_health{health="ok",station="line"}'] == 1 and 'edge_queue_depth{station="line"}' in metrics
    sha = json.loads(onnx_engine.with_name(onnx_engine.name + ".json").read_text())["sha256"]
    info = [name for name in metrics if name.startswith("edge_engine_info")]
    assert len(info) == 1 and f'model="sha256:{sha}"' in info[0] and 'backend="onnxruntime"' in info[0]


def test_a_busy_or_malformed_metrics_address_is_one_error_line(onnx_engine: Path, part_folder: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        for address, message in ((busy, "cannot serve metrics on"), ("not-a-port", "PORT or HOST:PORT")):
            result = subprocess.run(
                [*RUN, "--engine", str(onnx_engine), "--camera", f"folder://{part_folder}", "--threshold", "0.5"]
                + ["--publish", f"tcp://127.0.0.1:{free_port()}", "--metrics", address, "--wait-subscribers", "0"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 2, result.stderr
            errors = [line for line in result.stderr.splitlines() if "error" in line]
            assert len(errors) == 1 and message in errors[0] and errors[0].startswith("edge-run: error:"), errors
