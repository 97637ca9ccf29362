"""The PLC bridge: how late a verdict reaches OPC UA and Modbus, and what the bridge costs the line.

1. **Bridge latency.** A publisher in this process speaks the station's protocol (``edge.publish``) at ``--rate``
   verdicts per second into ``edge-bridge``; an OPC UA client (subscription, 10 ms publishing interval) and a
   Modbus PLC (polling every ``--plc-poll-ms``, acknowledging at once) take them. Per verdict: station publish → value
   written on the OPC UA server (its ServerTimestamp against the SourceTimestamp the bridge gives it: the
   station's publish time), → OPC UA client notified, → Modbus result seen by the PLC; and station publish →
   result presented in the Modbus registers, as the bridge measures it (its summary at exit).
2. **Load on the station.** One ``edge-run`` on a looping folder at ``--fps`` for ``--phases`` phases of
   ``--phase-s`` seconds (each after ``--settle-s``), the bridge (at ``--bridge-nice``, as
   deploy/edge-bridge.service runs it, with both clients attached; the PLC polling every 10 ms) running in every
   second phase only: the line's own latency (frame received → verdict published, from each verdict) without and
   with the bridge, in the same run, and the bridge's CPU time. The clients run on the same machine here; on a
   line they are the PLC and the SCADA.

    python -m benchmarks.bridge --engine runs/demo/memseg.onnx --images runs/demo/camera --fps 2 --phases 6 \\
        --phase-s 30 --settle-s 10 --verdicts 1000 --rate 20 --out benchmarks/results/bridge-cpu
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.provenance import provenance
from edge.bridge.probe import ModbusPlc, OpcuaProbe
from edge.client import VerdictSubscriber
from edge.publish import VerdictPublisher

STATION = "bench"
BRIDGE = [sys.executable, "-c", "import sys; from edge.bridge.cli import main; sys.exit(main(sys.argv[1:]))"]
RUN = [sys.executable, "-c", "import sys; from edge.cli import run_main; sys.exit(run_main(sys.argv[1:]))"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentiles(values_ms) -> dict:
    values = np.asarray(list(values_ms), dtype=float)
    if not values.size:
        return {"n": 0}
    return {
        "n": int(values.size),
        "p50": round(float(np.percentile(values, 50)), 3),
        "p99": round(float(np.percentile(values, 99)), 3),
        "max": round(float(values.max()), 3),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bridge:
    """``edge-bridge`` for one station on loopback, with an OPC UA client and a PLC attached on their own loop."""

    def __init__(self, endpoint: str, plc_poll_s: float, nice: int = 0) -> None:
        self.opcua_port, self.modbus_port = free_port(), free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.opcua_port}/edge/"
        command = [*BRIDGE, "--station", f"{STATION}={endpoint}", "--opcua", self.url]
        command += ["--modbus", f"127.0.0.1:{self.modbus_port}"]
        self.process = subprocess.Popen(
            command, stderr=subprocess.PIPE, text=True, preexec_fn=(lambda: os.nice(nice)) if nice else None
        )
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True).start()
        deadline = time.monotonic() + 300  # a niced bridge starts slowly on busy cores
        while not all(self._listening(port) for port in (self.opcua_port, self.modbus_port)):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("edge-bridge did not start: " + "".join(self.log))
            time.sleep(0.1)
        self.opcua = OpcuaProbe(self.url, STATION)
        self.plc = ModbusPlc("127.0.0.1", self.modbus_port, poll_s=plc_poll_s)
        self._stop = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._clients(),), daemon=True)
        self._thread.start()
        self._ready.wait(300)

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    async def _clients(self) -> None:
        self._stop = asyncio.Event()
        await self.opcua.start()
        await self.plc.connect()
        self._ready.set()
        await self.plc.run(self._stop)
        await self.plc.close()
        await self.opcua.stop()

    def close(self) -> dict[str, dict]:
        """Stop clients and bridge; returns the bridge's own publish → written summary per protocol."""
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        time.sleep(0.2)
        written = {}
        for line in self.log:
            match = re.search(r"(\w+): station publish → written p50 ([\d.]+) ms, p99 ([\d.]+) ms", line)
            if match:
                written[match.group(1)] = {"p50": float(match.group(2)), "p99": float(match.group(3))}
        return written


def bridge_latency(count: int, rate: float, plc_poll_s: float) -> dict:
    """Part 1: verdicts from a publisher in this process through the bridge to both clients."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    publisher = VerdictPublisher(endpoint, STATION)
    bridge = Bridge(endpoint, plc_poll_s)
    published: dict[int, int] = {}
    try:
        if not publisher.wait_subscribers(1, 30):
            raise RuntimeError("the bridge did not subscribe")
        next_beat = 0.0
        started = time.perf_counter()
        for index in range(count):
            if time.monotonic() >= next_beat:
                publisher.heartbeat({"health": "ok", "counters": {}, "interval_s": 1.0})
                next_beat = time.monotonic() + 1.0
            now = time.time_ns()
            message = publisher.verdict(
                {
                    "camera": "bench",
                    "frame_id": index,
                    "t_capture_ns": now,
                    "t_receive_ns": now,
                    "verdict": "pass" if index % 3 else "fail",
                    "reason": None,
                    "score": 0.25,
                    "threshold": 0.5,
                }
            )
            published[message["seq"]] = message["t_publish_ns"]
            time.sleep(max(0.0, started + (index + 1) / rate - time.perf_counter()))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and min(len(bridge.opcua.results()), len(bridge.plc.results)) < count:
            time.sleep(0.1)
        opcua, plc, overflow = bridge.opcua.results(), list(bridge.plc.results), bridge.plc.overflow
    finally:
        written = bridge.close()
        publisher.close(0)
    return {
        "verdicts": count,
        "rate_per_s": rate,
        "opcua_received": len(opcua),
        "modbus_received": len(plc),
        "modbus_overflow": overflow,
        "plc_poll_ms": plc_poll_s * 1e3,
        "opcua_value_written_ms": percentiles((r.written_ns - r.published_ns) / 1e6 for r in opcua),
        "opcua_client_notified_ms": percentiles((r.seen_ns - r.published_ns) / 1e6 for r in opcua),
        "modbus_result_presented_ms": written.get("modbus", {}),
        "modbus_plc_saw_it_ms": percentiles((r.seen_ns - published[r.seq]) / 1e6 for r in plc),
    }


def line_load(
    engine: Path, images: Path, fps: float, phases: int, phase_s: float, settle_s: float, threshold: float, nice: int
) -> dict:
    """Part 2: one edge-run; the bridge and its clients attached in every second phase."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    camera = f"folder://{images.resolve()}?loop=1&fps={fps}"
    command = [*RUN, "--engine", str(engine), "--camera", camera, "--publish", endpoint, "--station", STATION]
    command += ["--threshold", str(threshold), "--wait-subscribers", "1"]
    station = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    subscriber = VerdictSubscriber(endpoint, STATION, kinds=("verdict",))
    verdicts: list[tuple[int, float]] = []  # (t_publish_ns, receive → published ms)
    done = threading.Event()

    def collect() -> None:
        while not done.is_set():
            for _, payload in subscriber.poll(0.2):
                if payload["latency_ms"]["total"] is not None:
                    verdicts.append((payload["t_publish_ns"], payload["latency_ms"]["total"]))

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    windows, bridge_cpu = [], 0.0
    try:
        deadline = time.monotonic() + 60
        while not verdicts:
            if time.monotonic() > deadline or station.poll() is not None:
                raise RuntimeError("edge-run did not start: " + (station.stderr.read() if station.stderr else ""))
            time.sleep(0.2)
        time.sleep(3)  # warm
        for phase in range(phases):
            bridge = Bridge(endpoint, plc_poll_s=0.01, nice=nice) if phase % 2 else None
            time.sleep(settle_s)  # the backlog of a start or stop drains first: the phase is the steady state
            cpu = cpu_seconds(bridge.process.pid) if bridge else 0.0
            begin = time.time_ns()
            time.sleep(phase_s)
            windows.append((begin, time.time_ns(), bridge is not None))
            if bridge is not None:
                bridge_cpu += cpu_seconds(bridge.process.pid) - cpu
                bridge.close()
    finally:
        station.send_signal(signal.SIGTERM)
        station.wait(60)
        done.set()
        collector.join(5)
        subscriber.close()
    per_phase = []
    for begin, end, on in windows:
        latencies = [ms for t, ms in verdicts if begin <= t < end]
        per_phase.append({"bridge": on, **percentiles(latencies)})
    on_time = sum((end - begin) / 1e9 for begin, end, on in windows if on)
    return {
        "fps": fps,
        "phase_s": phase_s,
        "settle_s": settle_s,
        "bridge_nice": nice,
        "phases": per_phase,
        "without_bridge_ms": percentiles(ms for t, ms in verdicts for b, e, on in windows if not on and b <= t < e),
        "with_bridge_ms": percentiles(ms for t, ms in verdicts for b, e, on in windows if on and b <= t < e),
        "bridge_cpu_percent_of_one_core": round(100 * bridge_cpu / on_time, 1) if on_time else None,
    }


def markdown(result: dict) -> str:
    part1, part2 = result["bridge_latency"], result["line_load"]
    rows = [
        "| station publish → | p50 ms | p99 ms | max ms |",
        "| --- | --- | --- | --- |",
    ]
    for label, key in (
        ("OPC UA value written (ServerTimestamp)", "opcua_value_written_ms"),
        ("OPC UA client notified (10 ms publishing interval)", "opcua_client_notified_ms"),
        ("Modbus result presented in the registers (the bridge's own count)", "modbus_result_presented_ms"),
        (f"Modbus PLC saw it (polling every {part1['plc_poll_ms']:g} ms)", "modbus_plc_saw_it_ms"),
    ):
        values = part1[key]
        rows.append(f"| {label} | {values.get('p50', '-')} | {values.get('p99', '-')} | {values.get('max', '-')} |")
    rows += [
        "",
        "| the line: frame received → verdict published | frames | p50 ms | p99 ms | max ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, key in (("without the bridge", "without_bridge_ms"), ("with the bridge", "with_bridge_ms")):
        values = part2[key]
        rows.append(f"| {label} | {values['n']} | {values['p50']} | {values['p99']} | {values['max']} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", required=True, type=Path, help="the station's artefact (for part 2)")
    parser.add_argument("--images", required=True, type=Path, help="folder of frames the station loops over")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--fps", type=float, default=10.0, help="the station's camera rate in part 2")
    parser.add_argument("--phases", type=int, default=4, help="alternating phases, without the bridge first")
    parser.add_argument("--phase-s", type=float, default=30.0)
    parser.add_argument("--settle-s", type=float, default=10.0, help="wait after a bridge starts or stops")
    parser.add_argument("--verdicts", type=int, default=1000, help="verdicts through the bridge in part 1")
    parser.add_argument("--rate", type=float, default=20.0, help="verdicts per second in part 1")
    parser.add_argument("--plc-poll-ms", type=float, default=1.0, help="the PLC's polling period in part 1")
    parser.add_argument("--bridge-nice", type=int, default=10, help="the bridge's niceness in part 2 (the unit's)")
    parser.add_argument("--out", type=Path, help="folder for bridge.json and bridge.md")
    args = parser.parse_args(argv)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    result = {
        "bridge_latency": bridge_latency(args.verdicts, args.rate, args.plc_poll_ms / 1e3),
        "line_load": line_load(
            args.engine,
            args.images,
            args.fps,
            args.phases,
            args.phase_s,
            args.settle_s,
            args.threshold,
            args.bridge_nice,
        ),
    }
    text = provenance("benchmarks.bridge", argv) + "\n\n" + markdown(result)
    print(json.dumps(result, indent=2))
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bridge.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "bridge.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
