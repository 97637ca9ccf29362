"""Many stations through one bridge into one broker: ``--stations`` simulated stations (real publishers, verdicts and
heartbeats as ``edge-run`` sends them) at ``--rate`` verdicts a second each, one ``edge-bridge`` with the MQTT
output into Mosquitto (started here on a loopback port, ``$SYS`` every second), a subscriber to every verdict.
Reported per station count: verdicts offered and delivered per second, what the broker says it received per
second (``$SYS/broker/messages/received``, the bridge's states and the subscriber's traffic included), the
bridge's CPU (seconds per second, from ``/proc``), and whether every verdict arrived once, in order.

    python -m benchmarks.mqtt_fleet --stations 1,5,20 --rate 20 --seconds 20 --out benchmarks/results/mqtt-fleet
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.console import cpu_seconds
from edge.bench import machine
from edge.publish import VerdictPublisher

BRIDGE = "import sys; from edge.bridge.cli import main; sys.exit(main(sys.argv[1:]))"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


class Counter(threading.Thread):
    """``mosquitto_sub`` on every verdict and on the broker's received-messages count."""

    def __init__(self, port: int, prefix: str) -> None:
        super().__init__(daemon=True)
        command = [shutil.which("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(port), "-v", "-q", "1"]
        command += ["-t", f"{prefix}/+/verdict", "-t", "$SYS/broker/messages/received"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.seqs: dict[str, list[int]] = {}
        self.received: list[tuple[float, int]] = []  # (when, the broker's count)

    def run(self) -> None:
        for line in self.process.stdout:
            topic, _, payload = line.rstrip("\n").partition(" ")
            if topic.startswith("$SYS"):
                self.received.append((time.monotonic(), int(payload)))
            else:
                verdict = json.loads(payload)
                self.seqs.setdefault(verdict["station"], []).append(verdict["seq"])

    def delivered(self) -> int:
        return sum(len(s) for s in self.seqs.values())


def run_count(args, stations: int, broker_port: int, work: Path) -> dict:
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(stations)]
    publishers = [VerdictPublisher(e, f"s{i:02d}") for i, e in enumerate(endpoints)]
    counter = Counter(broker_port, args.prefix)
    counter.start()
    metrics = free_port()
    flags = [flag for i, e in enumerate(endpoints) for flag in ("--station", f"s{i:02d}={e}")]
    bridge = subprocess.Popen(
        [sys.executable, "-c", BRIDGE, *flags, "--opcua", "off", "--modbus", "off", "--metrics", f"127.0.0.1:{metrics}",
         "--mqtt", f"mqtt://127.0.0.1:{broker_port}", "--mqtt-prefix", args.prefix,
         "--mqtt-queue", str(work / f"queue-{stations}")],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(metrics)
    time.sleep(2.0)  # every feed subscribed
    count = int(args.rate * args.seconds)
    cpu, started = cpu_seconds([bridge.pid]), time.monotonic()
    for i in range(count):
        now = time.time_ns()
        for publisher in publishers:
            publisher.verdict(
                {"camera": "sim", "frame_id": i, "t_capture_ns": now, "t_receive_ns": now, "verdict": "pass",
                 "reason": None, "score": 0.1, "threshold": 0.5}
            )  # fmt: skip
            if i % int(args.rate) == 0:
                publisher.heartbeat({"health": "ok", "counters": None, "interval_s": 1.0})
        time.sleep(max(0.0, started + (i + 1) / args.rate - time.monotonic()))
    offered_s = time.monotonic() - started
    deadline = time.monotonic() + 60
    while counter.delivered() < stations * count and time.monotonic() < deadline:
        time.sleep(0.2)
    delivered_s = time.monotonic() - started
    used = cpu_seconds([bridge.pid]) - cpu
    bridge.send_signal(signal.SIGTERM)
    bridge.wait(timeout=20)
    counter.process.terminate()
    counter.join(timeout=10)
    for publisher in publishers:
        publisher.close(0)
    window = [(t, n) for t, n in counter.received if started <= t <= started + delivered_s]
    broker_rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) if len(window) > 1 else None
    in_order = all(seqs == list(range(count)) for seqs in counter.seqs.values()) and len(counter.seqs) == stations
    return {
        "stations": stations,
        "offered_per_s": round(stations * count / offered_s, 1),
        "delivered_per_s": round(counter.delivered() / delivered_s, 1),
        "broker_received_per_s": round(broker_rate, 1) if broker_rate else None,
        "bridge_cpu": round(used / delivered_s, 3),
        "every_verdict_once_in_order": in_order,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", default="1,5,20")
    parser.add_argument("--rate", type=float, default=20.0, help="verdicts a second per station")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--prefix", default="site/area/line")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if shutil.which("mosquitto") is None:
        parser.error("Mosquitto is not installed: apt-get install -y mosquitto mosquitto-clients")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        port = free_port()
        (work / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nsys_interval 1\n")
        broker = subprocess.Popen(["mosquitto", "-c", str(work / "mosquitto.conf")], stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            for stations in (int(n) for n in args.stations.split(",")):
                rows.append(run_count(args, stations, port, work))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            broker.terminate()
            broker.wait(timeout=10)
    result = {"machine": machine(), "rate": args.rate, "seconds": args.seconds, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"{args.rate:g} verdicts/s per simulated station for {args.seconds:g} s, one edge-bridge (MQTT, JSON) into "
        f"Mosquitto on loopback; {machine()['cpu']}, {os.cpu_count()} cores, {machine()['date']}",
        "",
        "| stations | offered /s | delivered /s | broker received /s | bridge CPU (of a core) | every verdict once, in "
        "order |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['stations']} | {r['offered_per_s']} | {r['delivered_per_s']} | {r['broker_received_per_s']} | "
            f"{r['bridge_cpu']:.0%} | {'yes' if r['every_verdict_once_in_order'] else 'no'} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
