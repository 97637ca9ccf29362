"""edge-bridge with real clients on loopback: an asyncua client and a pymodbus PLC receive every verdict in order
(a station run, a plain publisher, CURVE-free), Basic256Sha256 admits trusted clients only, the Modbus handshake
queues and counts overflow, faults (malformed messages, a silent station, a restart, ports in use) behave."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("asyncua", reason="the bridge extra is not installed")
pytest.importorskip("pymodbus", reason="the bridge extra is not installed")
pytest.importorskip("prometheus_client", reason="the bridge extra is not installed")

from asyncua import ua  # noqa: E402
from asyncua.ua.uaerrors import UaError  # noqa: E402

from edge.bridge.config import BridgeConfig  # noqa: E402
from edge.bridge.modbus import ACKNOWLEDGE, NEW_RESULT, RESULT_ID, STATE  # noqa: E402
from edge.bridge.probe import ModbusPlc, OpcuaProbe  # noqa: E402
from edge.publish import VerdictPublisher  # noqa: E402
from edge.snapshot import SnapshotServer  # noqa: E402

ROOT = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(module: str, function: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; from {module} import {function} as m; sys.exit(m(sys.argv[1:]))"]


BRIDGE = command("edge.bridge.cli", "main")


def wait_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the bridge exited"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


@contextlib.contextmanager
def bridge(*args: str, wait_for: int | tuple[int, ...]) -> Iterator[subprocess.Popen]:
    """``edge-bridge`` with these arguments, once ``wait_for`` (a port, or each of several: the outputs start one
    after the other) accepts connections; stopped with SIGTERM."""
    process = subprocess.Popen([*BRIDGE, *args], stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(process.stderr), daemon=True)
    reader.start()
    passed = False
    try:
        for port in (wait_for,) if isinstance(wait_for, int) else wait_for:
            wait_port(port, process)
        yield process
        passed = True
    finally:
        process.terminate()
        try:
            code = process.wait(timeout=20)
        except subprocess.TimeoutExpired:  # still running 20 s after SIGTERM: a failure, with its log
            process.kill()
            code = process.wait()
        reader.join(timeout=5)
        process.log = "".join(log)
        if not passed:
            print(f"edge-bridge's log (exit {code}):\n{process.log}")  # shown with the failure
        assert code == 0 or not passed, f"exit {code}:\n{process.log}"


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as {sample with labels: value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


class Station:
    """A station's publishing side as edge-run drives it: verdicts with counters, heartbeats, final status."""

    def __init__(self, endpoint: str, name: str = "line", heartbeat_s: float = 1.0) -> None:
        self.publisher = VerdictPublisher(endpoint, name)
        self.heartbeat_s = heartbeat_s
        self.counts = {"pass": 0, "fail": 0, "error": 0}
        self.sinks: list = []  # e.g. a SnapshotServer, as the pipeline's

    def counters(self) -> dict:
        total = sum(self.counts.values())
        return {"frames": total, "verdicts": total, **self.counts, "errors": {"overrun": self.counts["error"]}}

    def verdict(self, index: int) -> dict:
        kind = ("pass", "fail", "pass", "error")[index % 4]
        self.counts[kind] += 1
        now = time.time_ns()
        message = self.publisher.verdict(
            {
                "camera": "test",
                "frame_id": index,
                "t_capture_ns": now,
                "t_receive_ns": now,
                "verdict": kind,
                "reason": "overrun" if kind == "error" else None,
                "score": None if kind == "error" else round(0.1 + 0.8 * (kind == "fail") + index * 1e-4, 6),
                "threshold": 0.5,
            }
        )
        for sink in self.sinks:
            sink.write(message, None)
        return message

    def heartbeat(self) -> None:
        self.publisher.heartbeat({"health": "ok", "counters": self.counters(), "interval_s": self.heartbeat_s})

    def status(self) -> dict:
        """What the pipeline's snapshot status says."""
        return {
            "run_id": self.publisher.run_id,
            "health": "ok",
            "last_seq": self.publisher.seq - 1,
            "counters": self.counters(),
        }

    def close(self) -> None:
        self.publisher.close(0)


async def publish(station: Station, count: int, rate: float, first: int = 0) -> list[dict]:
    """``count`` verdicts at ``rate`` per second with heartbeats in between, as a camera-paced station does."""
    sent, next_beat = [], time.monotonic()
    for index in range(first, first + count):
        if time.monotonic() >= next_beat:
            station.heartbeat()
            next_beat = time.monotonic() + station.heartbeat_s
        sent.append(station.verdict(index))
        await asyncio.sleep(1 / rate)
    station.heartbeat()
    return sent


async def until(condition, timeout: float = 20.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(step)


def test_a_station_run_reaches_an_opcua_client_and_a_plc_every_verdict_in_order(
    onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    ports = [free_port() for _ in range(4)]
    endpoint, url = f"tcp://127.0.0.1:{ports[0]}", f"opc.tcp://127.0.0.1:{ports[1]}/edge/"
    jsonl = tmp_path / "station.jsonl"
    args = ["--station", f"line={endpoint}", "--opcua", url, "--modbus", f"127.0.0.1:{ports[2]}"]
    with bridge(*args, "--metrics", f"127.0.0.1:{ports[3]}", wait_for=(ports[1], ports[2])):

        async def main() -> tuple:
            opcua, plc, stop = OpcuaProbe(url, "line"), ModbusPlc("127.0.0.1", ports[2]), asyncio.Event()
            await opcua.start()
            await plc.connect()
            polling = asyncio.create_task(plc.run(stop))
            run = await asyncio.create_subprocess_exec(
                *command("edge.cli", "run_main"),
                *("--engine", str(onnx_engine), "--camera", f"folder://{part_folder}?loop=1&fps=20"),
                *("--publish", endpoint, "--station", "line", "--max-frames", "100", "--threshold", "0.5"),
                *("--jsonl", str(jsonl), "--wait-subscribers", "1"),
            )
            assert await asyncio.wait_for(run.wait(), 120) == 0

            async def all_arrived() -> bool:
                return len(opcua.results()) >= 100 and len(plc.results) >= 100

            await until(all_arrived)
            await asyncio.sleep(0.3)  # any extra would show now
            metrics = scrape(ports[3])
            stop.set()
            await polling
            await plc.close()
            counters = await opcua.read()
            await opcua.stop()
            return opcua.results(), plc.results, counters, metrics

        received, plc_results, counters, metrics = asyncio.run(main())
    station = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [v["seq"] for v in station] == list(range(100))
    expected = [(v["seq"], v["verdict"], v["score"]) for v in station]
    assert {v["reason"] for v in station} >= {None, "unreadable_image", "frame_format"}  # errors travel too
    assert [(r.seq, r.verdict, r.score) for r in received] == expected  # every verdict, in order, as published
    assert [(r.seq, r.verdict) for r in plc_results] == [(s, v) for s, v, _ in expected]  # 0 lost, 0 repeated
    assert all(abs(r.score - s) <= 5e-5 for r, (_, _, s) in zip(plc_results, expected, strict=True) if s is not None)
    kinds = {kind: sum(v["verdict"] == kind for v in station) for kind in ("pass", "fail", "error")}
    assert [counters[name] for name in ("Passed", "Failed", "Errors")] == [kinds[k] for k in ("pass", "fail", "error")]
    assert counters["Missed"] == 0 and counters["State"] == "offline"  # the run's final status ends it
    assert counters["Recipe"] == ""  # a station with one engine has no recipe
    assert metrics['edge_bridge_messages_total{kind="verdict",station="line"}'] == 100
    assert metrics['edge_bridge_clients{protocol="opcua"}'] == metrics['edge_bridge_clients{protocol="modbus"}'] == 1
    assert all(r.written_ns >= r.published_ns for r in received)


def make_certificates(folder: Path) -> dict[str, Path]:
    """The bridge's pair, a trusted client's, and a stranger's (not in the trusted folder), with edge-bridge certs."""
    from edge.bridge.cli import main

    for name, client in (("bridge", False), ("scada", True), ("stranger", True)):
        assert main(["certs", "--out", str(folder / name), "--name", name, *(["--client"] if client else [])]) == 0
    (folder / "trusted").mkdir()
    shutil.copy(folder / "scada" / "scada.der", folder / "trusted")
    assert oct((folder / "scada" / "scada.pem").stat().st_mode & 0o777) == "0o600"
    return {name: folder / name / name for name in ("bridge", "scada", "stranger")} | {"trusted": folder / "trusted"}


def test_basic256sha256_admits_trusted_clients_only(tmp_path: Path) -> None:
    keys = make_certificates(tmp_path)
    ports = [free_port() for _ in range(2)]
    endpoint, url = f"tcp://127.0.0.1:{ports[0]}", f"opc.tcp://127.0.0.1:{ports[1]}/edge/"
    secure = ["--opcua-certificate", f"{keys['bridge']}.der", "--opcua-private-key", f"{keys['bridge']}.pem"]
    station = Station(endpoint)
    try:
        with bridge(
            *("--station", f"line={endpoint}", "--opcua", url, "--modbus", "off"),
            *secure,
            *("--opcua-trusted", str(keys["trusted"])),
            wait_for=ports[1],
        ):
            assert station.publisher.wait_subscribers(1, 30)
            probe = subprocess.Popen(
                [*command("edge.bridge.probe", "main"), "--station", "line", "--opcua", url, "--expect", "100"]
                + ["--certificate", f"{keys['scada']}.der", "--private-key", f"{keys['scada']}.pem"]
                + ["--server-certificate", f"{keys['bridge']}.der", "--ready", str(tmp_path / "ready")],
                stdout=subprocess.PIPE,
                text=True,
            )

            async def main() -> list[str]:
                async def ready() -> bool:
                    return (tmp_path / "ready").exists()

                await until(ready, timeout=60)
                await publish(station, 100, rate=50)
                refused = []
                for who, anonymous in (("scada", True), ("stranger", False)):
                    client = OpcuaProbe(url, "line", f"{keys[who]}.der", f"{keys[who]}.pem", f"{keys['bridge']}.der")
                    client.anonymous = anonymous
                    with pytest.raises((UaError, OSError, TimeoutError)):
                        await client.start()
                    await client.stop()
                    refused.append(who)
                plain = OpcuaProbe(url, "line")  # no security at all: no such endpoint
                with pytest.raises((UaError, OSError, TimeoutError)):
                    await plain.start()
                await plain.stop()
                return refused

            assert asyncio.run(main()) == ["scada", "stranger"]  # anonymous with a good channel; an untrusted key
            out, _ = probe.communicate(timeout=60)
            assert probe.returncode == 0, out
            report = json.loads(out)["opcua"]
            assert report["verdicts"] == 100 and report["in_order"] and report["gaps"] == report["repeated"] == 0
            assert (report["pass"], report["fail"], report["error"]) == (50, 25, 25)
    finally:
        station.close()


def test_modbus_handshake_queues_for_a_slow_plc_counts_overflow_and_refuses_bad_writes() -> None:
    ports = [free_port() for _ in range(3)]
    endpoint = f"tcp://127.0.0.1:{ports[0]}"
    station = Station(endpoint)
    queue = 5
    try:
        with bridge(
            *("--station", f"line={endpoint}", "--opcua", "off", "--modbus", f"127.0.0.1:{ports[1]}"),
            *("--modbus-queue", str(queue), "--metrics", f"127.0.0.1:{ports[2]}"),
            wait_for=ports[1],
        ):
            assert station.publisher.wait_subscribers(1, 30)

            async def main() -> tuple:
                plc = ModbusPlc("127.0.0.1", ports[1], ack_delay_s=0.1)  # acknowledges at half the line's rate
                await plc.connect()
                stop = asyncio.Event()
                polling = asyncio.create_task(plc.run(stop))
                await publish(station, 60, rate=20)
                await asyncio.sleep(1.5)  # the queue drains
                stop.set()
                await polling
                image = await plc.registers()
                refusals = [
                    await plc.client.write_register(STATE, 1, device_id=1),  # read-only
                    await plc.client.write_register(ACKNOWLEDGE, (image[RESULT_ID] + 7) % 65535, device_id=1),
                ]
                repeat = await plc.client.write_register(ACKNOWLEDGE, image[RESULT_ID], device_id=1)
                await plc.close()
                return plc, image, refusals, repeat

            plc, image, refusals, repeat = asyncio.run(main())
            metrics = scrape(ports[2])
    finally:
        station.close()
    seqs = [result.seq for result in plc.results]
    assert seqs == sorted(set(seqs))  # in order, none twice
    # the queue filled to its bound, visibly (the PLC reads it between its acknowledges: full, or one less), and
    # overflowed
    assert plc.overflow > 0 and queue - 1 <= plc.max_queue_depth <= queue
    assert len(seqs) + plc.overflow == 60  # every verdict either reached the PLC or was counted as dropped
    assert len(set(range(60)) - set(seqs)) == plc.overflow
    assert metrics['edge_bridge_modbus_overflow_total{station="line"}'] == plc.overflow
    assert image[NEW_RESULT] == 0  # all acknowledged
    assert [(r.isError(), r.exception_code) for r in refusals] == [(True, 2), (True, 3)]  # address, then value
    assert not repeat.isError()  # acknowledging the current result again is harmless
    assert metrics['edge_bridge_modbus_refused_total{station="line"}'] == 1


def test_malformed_messages_are_skipped_and_a_silent_station_goes_offline_within_three_heartbeats() -> None:
    ports = [free_port() for _ in range(4)]
    endpoint, url = f"tcp://127.0.0.1:{ports[0]}", f"opc.tcp://127.0.0.1:{ports[1]}/edge/"
    station = Station(endpoint, heartbeat_s=0.5)
    try:
        with bridge(
            *("--station", f"line={endpoint}", "--opcua", url, "--modbus", f"127.0.0.1:{ports[2]}"),
            *("--metrics", f"127.0.0.1:{ports[3]}"),
            wait_for=(ports[1], ports[2]),
        ):
            assert station.publisher.wait_subscribers(1, 30)
            seen = asyncio.run(_malformed_then_silent(station, url, ports[2]))
            metrics = scrape(ports[3])
    finally:
        station.close()
    assert seen["seqs"] == [0, 1, 2, 4, 5, 6]  # the malformed verdict (seq 3) skipped, nothing else lost
    assert seen["missed"] == 1 and metrics['edge_bridge_missed_total{station="line"}'] == 1  # the gap clients see
    assert metrics['edge_bridge_malformed_total{station="line"}'] == 3
    assert seen["running"] == (1, "running")  # Modbus State, OPC UA State
    assert 3 * 0.5 <= seen["silent_s"] < 4 * 0.5  # offline once three heartbeats are missed: not before, nor later
    stale = seen["stale"]
    assert stale.StatusCode.value == ua.StatusCodes.UncertainLastUsableValue and stale.Value.Value == 6
    assert seen["modbus_offline"] == 0  # State offline on Modbus too
    assert seen["back"].value == ua.StatusCodes.UncertainLastUsableValue  # alive again, but no new verdict yet
    assert seen["fresh"].is_good()


async def _malformed_then_silent(station: Station, url: str, modbus_port: int) -> dict:
    opcua, plc = OpcuaProbe(url, "line"), ModbusPlc("127.0.0.1", modbus_port)
    await opcua.start()
    await plc.connect()
    last_beat = [time.monotonic()]

    async def beat() -> None:
        while True:
            station.heartbeat()
            last_beat[0] = time.monotonic()
            await asyncio.sleep(station.heartbeat_s)

    beating = asyncio.create_task(beat())
    template = (await publish(station, 3, rate=50))[-1]
    raw = station.publisher._socket
    raw.send_multipart([b"verdict/line", b"not json"])
    raw.send_multipart([b"verdict/line", b'{"run_id": "x", "kind": "verdict"}'])  # no seq
    raw.send_multipart([b"verdict/line", json.dumps({**template, "seq": 3, "verdict": "maybe"}).encode()])
    station.publisher.seq += 1  # the station moved on past the malformed verdict
    await publish(station, 3, rate=50, first=4)
    await until(lambda: _settled(opcua, 6))
    seen = {"running": ((await plc.registers())[STATE], (await opcua.read())["State"])}
    beating.cancel()  # the station falls silent
    await until(lambda: _state(opcua, "offline"), step=0.01)
    seen["silent_s"] = time.monotonic() - last_beat[0]
    seen["stale"] = await opcua.nodes["Seq"].read_data_value(raise_on_bad_status=False)
    seen["modbus_offline"] = (await plc.registers())[STATE]
    station.heartbeat()
    await until(lambda: _state(opcua, "running"))
    seen["back"] = (await opcua.nodes["Seq"].read_data_value(raise_on_bad_status=False)).StatusCode
    await publish(station, 1, rate=50, first=7)
    await until(lambda: _settled(opcua, 7))
    seen["fresh"] = (await opcua.nodes["Seq"].read_data_value(raise_on_bad_status=False)).StatusCode
    seen["seqs"], seen["missed"] = [r.seq for r in opcua.results()][:6], (await opcua.read())["Missed"]
    await plc.close()
    await opcua.stop()
    return seen


async def _state(opcua: OpcuaProbe, state: str) -> bool:
    return (await opcua.read())["State"] == state


async def _settled(opcua: OpcuaProbe, count: int) -> bool:
    return len(opcua.results()) >= count


def test_a_restarted_bridge_resumes_from_the_snapshot_without_repeating_or_inventing() -> None:
    ports = [free_port() for _ in range(4)]
    endpoint, snapshot = f"tcp://127.0.0.1:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}"
    url = f"opc.tcp://127.0.0.1:{ports[2]}/edge/"
    station = Station(endpoint)
    server = SnapshotServer(snapshot, station.status)
    station.sinks.append(server)
    args = ["--station", f"line={endpoint}", "--snapshot", f"line={snapshot}", "--opcua", url]
    args += ["--modbus", f"127.0.0.1:{ports[3]}"]
    try:
        with bridge(*args, wait_for=(ports[2], ports[3])):
            assert station.publisher.wait_subscribers(1, 30)
            first = asyncio.run(_follow(station, url, ports[3], 20, first=0))
        _until_unsubscribed(station.publisher)  # else the next wait would count the bridge that stopped
        asyncio.run(publish(station, 10, rate=100, first=20))  # while no bridge runs
        with bridge(*args, wait_for=(ports[2], ports[3])):
            assert station.publisher.wait_subscribers(1, 30)
            station.heartbeat()  # the stream flows: the bridge asks the snapshot
            second = asyncio.run(_follow(station, url, ports[3], 5, first=30, resumed=29))
    finally:
        server.close()
        station.close()
    assert first["opcua"] == first["plc"] == list(range(20))
    assert second["initial"]["Seq"] == 29  # the station's last verdict at once, from the snapshot
    counters = second["initial"]
    assert (counters["Passed"], counters["Failed"], counters["Errors"], counters["Missed"]) == (15, 8, 7, 0)
    assert second["new_result"] == 0  # nothing re-presented to the PLC
    assert second["opcua"] == second["plc"] == list(range(30, 35))  # then exactly the new ones: none repeated


def _until_unsubscribed(publisher: VerdictPublisher, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while publisher.subscribers:
        assert time.monotonic() < deadline, "the stopped subscriber is still counted"
        publisher.poll_subscriptions(100)


async def _follow(station: Station, url: str, modbus_port: int, count: int, first: int, resumed=None) -> dict:
    opcua, plc = OpcuaProbe(url, "line"), ModbusPlc("127.0.0.1", modbus_port)
    await opcua.start()
    await plc.connect()
    seen = {}
    if resumed is not None:

        async def shows_snapshot() -> bool:
            return await _good(opcua.nodes["Seq"]) and await opcua.nodes["Seq"].read_value() == resumed

        await until(shows_snapshot)
        seen["initial"] = {**await opcua.read(), "Seq": await opcua.nodes["Seq"].read_value()}
        seen["new_result"] = (await plc.registers())[NEW_RESULT]
    stop = asyncio.Event()
    polling = asyncio.create_task(plc.run(stop))
    await publish(station, count, rate=30, first=first)

    async def arrived() -> bool:
        return len(opcua.results()) >= count and len(plc.results) >= count

    await until(arrived)
    await asyncio.sleep(0.3)  # a repeat would show now
    stop.set()
    await polling
    await plc.close()
    await opcua.stop()
    return {**seen, "opcua": [r.seq for r in opcua.results()], "plc": [r.seq for r in plc.results]}


async def _good(node) -> bool:
    return (await node.read_data_value(raise_on_bad_status=False)).StatusCode.is_good()


def test_ports_in_use_and_bad_settings_give_one_error_line(tmp_path: Path, capsys) -> None:
    from edge.bridge.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = {
            "metrics": ["--metrics", f"127.0.0.1:{port}", "--opcua", "off", "--modbus", "off"],
            "opcua": ["--opcua", f"opc.tcp://127.0.0.1:{port}/edge/", "--modbus", "off"],
            "modbus": ["--opcua", "off", "--modbus", f"127.0.0.1:{port}"],
        }
        for name, args in cases.items():
            result = subprocess.run(
                [*BRIDGE, "--station", "a=tcp://127.0.0.1:1", *args], capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 2, (name, result.stderr)
            assert result.stderr.count("\n") == 1 and "in use" in result.stderr, result.stderr
            assert result.stderr.startswith("edge-bridge: error: cannot serve"), result.stderr
    bad = tmp_path / "bridge.toml"
    bad.write_text('[bridge]\nmodbus_queue = "many"\n[[station]]\nname = "a"\nverdicts = "tcp://h:1"\n')
    cases = {
        "no station": ([], "no station"),
        "not NAME=ENDPOINT": (["--station", "tcp://h:1"], "NAME=ENDPOINT"),
        "wrong type": (["--config", str(bad)], "'modbus_queue' must be a whole number"),
        "half the keys": (["--station", "a=tcp://h:1", "--opcua-certificate", "x.der"], "opcua_private_key"),
        "bad endpoint": (["--station", "a=tcp://h:1", "--opcua", "http://h/"], "opc.tcp://HOST:PORT"),
        "snapshot of nobody": (["--station", "a=tcp://h:1", "--snapshot", "b=tcp://h:2"], "no --station named"),
    }
    for name, (args, message) in cases.items():  # refused with the settings, before anything opens
        assert main(args) == 2, name
        error = capsys.readouterr().err
        assert error.startswith("edge-bridge: error:") and error.count("\n") == 1 and message in error, (name, error)


def test_the_shipped_config_unit_and_help() -> None:
    config = BridgeConfig.load(ROOT / "deploy" / "bridge.toml", {}, [])
    assert [(s.name, s.modbus_unit) for s in config.stations] == [("line3-cam1", 1), ("line3-cam2", 2)]
    assert config.outputs["opcua"].address.startswith("opc.tcp://") and config.metrics == "9102"
    unit = (ROOT / "deploy" / "edge-bridge.service").read_text()
    assert "ExecStart=/usr/local/bin/edge-bridge --config /etc/edge/bridge.toml" in unit and "Type=notify" in unit
    shown = subprocess.run([*BRIDGE, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "examples:" in shown and "edge-bridge certs" in shown and "ns=2;s=<station>" in shown
