"""edge-bridge into a real MQTT broker: Debian's Mosquitto on loopback, ``mosquitto_sub`` as the independent
subscriber (a persistent session), the bridge following an emulated-camera ``edge-run``. Verdicts arrive once and
in order (repeats of QoS 1 dropped by ``(run_id, seq)``, as docs/plc.md tells consumers), across a broker outage in
the middle of the run; states are retained; a killed bridge fires its will. Sparkplug B is read back with a
protobuf decoder written here from the specification (not the library that encodes it). Twenty simulated
stations go through one bridge."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("paho.mqtt.client", reason="the bridge extra is not installed")
pytest.importorskip("pysparkplug", reason="the bridge extra is not installed")

from tests.emulator import emulator_images  # noqa: E402
from tests.test_bridge import BRIDGE, Station, free_port, scrape, wait_port  # noqa: E402
from tests.test_runtime import cli  # noqa: E402

MOSQUITTO, MOSQUITTO_SUB = shutil.which("mosquitto"), shutil.which("mosquitto_sub")
pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_SUB is None,
    reason="Mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients)",
)
PREFIX = "site/area/line"


class Broker:
    """Mosquitto on a loopback port with persistence (sessions and queued messages survive a restart)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {folder}/\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stderr=subprocess.DEVNULL)
        wait_port(self.port, self.process)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)  # saves the persistent sessions
        self.process.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


@pytest.fixture
def broker(tmp_path: Path):
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Broker(folder)
    broker.start()
    yield broker
    if broker.process.poll() is None:
        broker.stop()


class Subscriber:
    """``mosquitto_sub`` with a persistent session (``-c``, QoS 1) writing ``topic payload`` lines (hex payloads
    for Sparkplug) to a file; it reconnects by itself when the broker comes back."""

    def __init__(self, broker: Broker, topic: str, path: Path, hexadecimal: bool = False) -> None:
        self.path = path
        form = ["-F", "%t %x"] if hexadecimal else ["-v"]
        command = [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(broker.port), "-t", topic, "-q", "1", "-c"]
        self.process = subprocess.Popen(
            [*command, "-i", f"sub-{path.stem}", *form], stdout=path.open("w"), stderr=subprocess.DEVNULL
        )
        time.sleep(0.5)  # subscribed before anything is published

    def lines(self) -> list[tuple[str, str]]:
        return [tuple(line.split(" ", 1)) for line in self.path.read_text().splitlines() if " " in line]

    def verdicts(self) -> list[dict]:
        return [json.loads(payload) for topic, payload in self.lines() if topic.endswith("/verdict")]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def once_in_order(verdicts: list[dict]) -> tuple[list[dict], int]:
    """What a consumer keeps: repeats of ``(run_id, seq)`` dropped; returns them and how many were dropped."""
    seen, kept = set(), []
    for verdict in verdicts:
        key = (verdict["run_id"], verdict["seq"])
        if key not in seen:
            seen.add(key)
            kept.append(verdict)
    return kept, len(verdicts) - len(kept)


def start_bridge(*args: str) -> tuple[subprocess.Popen, int, list[str]]:
    metrics = free_port()
    process = subprocess.Popen([*BRIDGE, *args, "--metrics", f"127.0.0.1:{metrics}"], stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(process.stderr), daemon=True).start()
    wait_port(metrics, process)
    return process, metrics, log


def bound_stations(names: list[str]) -> tuple[list[str], list[Station]]:
    """Simulated stations publishing on free loopback ports, each bound as soon as its port is chosen (a port
    found free and bound later can meanwhile be taken by another socket's outgoing connection)."""
    from edge.publish import PublishError

    endpoints, stations = [], []
    for name in names:
        while True:
            endpoint = f"tcp://127.0.0.1:{free_port()}"
            try:
                stations.append(Station(endpoint, name, heartbeat_s=0.5))
                endpoints.append(endpoint)
                break
            except PublishError:
                continue
    return endpoints, stations


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout_s:.0f} s")


def emulated_station(part_folder: Path, tmp_path: Path, endpoint: str, frames: int, fps: float, onnx_engine: Path):
    pytest.importorskip("pypylon.pylon", reason="pypylon is not installed (pip install pypylon)")
    images = emulator_images(part_folder, tmp_path, 12)
    command = [
        *cli("run_main"), "--engine", str(onnx_engine), "--camera", "basler0", "--trigger", "software",
        "--fps", str(fps), "--emulator-images", str(images), "--max-frames", str(frames), "--station", "line1",
        "--publish", endpoint, "--threshold", "0.5", "--wait-subscribers", "1", "--heartbeat-s", "0.5",
    ]  # fmt: skip
    return subprocess.Popen(command, stderr=subprocess.DEVNULL, env={**os.environ, "PYLON_CAMEMU": "1"})


def test_every_verdict_reaches_the_broker_once_in_order_across_an_outage_and_the_will_fires(
    broker: Broker, onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    frames, fps, outage_s = 400, 10.0, 30.0
    subscriber = Subscriber(broker, f"{PREFIX}/#", tmp_path / "verdicts.txt")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    bridge, metrics, log = start_bridge(
        "--station", f"line1={endpoint}", "--opcua", "off", "--modbus", "off", "--mqtt", broker.url,
        "--mqtt-prefix", PREFIX, "--mqtt-queue", str(tmp_path / "queue"), "--mqtt-client-id", "bridge1",
    )  # fmt: skip
    station = emulated_station(part_folder, tmp_path, endpoint, frames, fps, onnx_engine)
    try:
        wait_for(lambda: len(subscriber.verdicts()) >= 60, 60, "60 verdicts before the outage")
        broker.stop()
        down = time.time_ns()
        time.sleep(outage_s / 2)
        queued_while_down = scrape(metrics)["edge_bridge_mqtt_queued"]
        connected_while_down = scrape(metrics)["edge_bridge_mqtt_connected"]
        time.sleep(outage_s / 2)
        broker.start()
        up = time.time_ns()
        assert station.wait(timeout=120) == 0
        wait_for(lambda: len(once_in_order(subscriber.verdicts())[0]) >= frames, 60, "every verdict")
        wait_for(lambda: scrape(metrics)["edge_bridge_mqtt_queued"] == 0, 30, "an empty queue")
        state = subprocess.run(
            [
                MOSQUITTO_SUB,
                "-h",
                "127.0.0.1",
                "-p",
                str(broker.port),
                "-t",
                f"{PREFIX}/line1/state",
                "-C",
                "1",
                "-W",
                "10",
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip  (a new client: only the retained message can reach it)
        bridge.send_signal(signal.SIGKILL)
        bridge.wait(timeout=10)
        will = wait_for(
            lambda: [p for t, p in subscriber.lines() if t == f"{PREFIX}/bridge/bridge1" and "offline" in p],
            30, "the will",
        )  # fmt: skip
    finally:
        for process in (station, bridge):
            if process.poll() is None:
                process.kill()
        subscriber.close()
    kept, repeated = once_in_order(subscriber.verdicts())
    assert [v["seq"] for v in kept] == list(range(frames)) and len({v["run_id"] for v in kept}) == 1
    assert repeated <= 100  # only what was in flight when the broker went away can come twice
    assert queued_while_down > 0 and connected_while_down == 0
    during = [v for v in kept if down < v["t_publish_ns"] < up]
    assert len(during) >= outage_s * fps * 0.8  # the line went on at its rate while the broker was down
    assert all(v["verdict"] in ("pass", "fail") for v in kept)  # and judged every part (no overrun, no error)
    latencies = {
        name: sorted((v["t_publish_ns"] - v["t_receive_ns"]) / 1e6 for v in part)
        for name, part in (("before", [v for v in kept if v["t_publish_ns"] < down]), ("during", during))
    }
    print({name: round(values[int(0.99 * (len(values) - 1))], 2) for name, values in latencies.items()}, "p99 ms")
    retained = json.loads(state.stdout)
    assert retained["station"] == "line1" and retained["counters"]["pass"] + retained["counters"]["fail"] == frames
    assert json.loads(will[-1]) == {"state": "offline"}
    assert "MQTT broker 127.0.0.1" in "".join(log) and "verdicts queue on disk" in "".join(log)


# -- Sparkplug B, read by a decoder written from the specification --------------------------------------------


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(data: bytes):
    """(field number, wire type, value) of a protobuf message."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        elif wire == 2:
            length, i = _varint(data, i)
            value, i = data[i : i + length], i + length
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


SPARKPLUG_TYPES = {4: "Int64", 10: "Double", 11: "Boolean", 12: "String"}


def decode_payload(data: bytes) -> dict:
    """Sparkplug B ``Payload``: timestamp (1), metrics (2), seq (3); ``Metric``: name (1), timestamp (3), datatype
    (4), is_historical (5), is_null (7), long_value (11), double_value (13), boolean_value (14), string_value (15)."""
    import struct

    payload: dict = {"metrics": {}}
    for number, _, value in _fields(data):
        if number == 1:
            payload["timestamp"] = value
        elif number == 3:
            payload["seq"] = value
        elif number == 2:
            metric: dict = {}
            for field, _, item in _fields(value):
                if field == 1:
                    metric["name"] = item.decode()
                elif field == 4:
                    metric["type"] = SPARKPLUG_TYPES.get(item, item)
                elif field == 5:
                    metric["historical"] = bool(item)
                elif field == 7:
                    metric["null"] = bool(item)
                elif field in (10, 11):
                    metric["value"] = item
                elif field == 13:
                    metric["value"] = struct.unpack("<d", item)[0]
                elif field == 14:
                    metric["value"] = bool(item)
                elif field == 15:
                    metric["value"] = item.decode()
            payload["metrics"][metric["name"]] = metric
    return payload


def test_sparkplug_births_data_and_deaths_read_back_with_an_independent_decoder(broker: Broker, tmp_path: Path) -> None:
    subscriber = Subscriber(broker, "spBv1.0/#", tmp_path / "sparkplug.txt", hexadecimal=True)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    station = Station(endpoint, "line3/cam1", heartbeat_s=0.5)
    bridge, _, _ = start_bridge(
        "--station", f"line3/cam1={endpoint}", "--opcua", "off", "--modbus", "off", "--mqtt", broker.url,
        "--mqtt-format", "sparkplug", "--mqtt-group", "plant", "--mqtt-client-id", "node1",
        "--mqtt-queue", str(tmp_path / "queue"),
    )  # fmt: skip
    try:
        time.sleep(1.0)
        station.heartbeat()
        for i in range(300):  # more than 256 messages: seq wraps
            station.verdict(i)
            if i % 50 == 0:
                station.heartbeat()
            time.sleep(0.005)
        wait_for(lambda: sum("/DDATA/" in t for t, _ in subscriber.lines()) >= 300, 30, "300 DDATA")
        bridge.send_signal(signal.SIGKILL)
        bridge.wait(timeout=10)
        wait_for(lambda: any("/NDEATH/" in t for t, _ in subscriber.lines()), 30, "NDEATH")
    finally:
        if bridge.poll() is None:
            bridge.kill()
        subscriber.close()
        station.close()
    messages = [(topic, decode_payload(bytes.fromhex(hex_))) for topic, hex_ in subscriber.lines()]
    topics = [topic for topic, _ in messages]
    assert topics[0] == "spBv1.0/plant/NBIRTH/node1" and topics[1] == "spBv1.0/plant/DBIRTH/node1/line3:cam1"
    birth, device_birth = messages[0][1], messages[1][1]
    assert birth["seq"] == 0 and birth["metrics"]["bdSeq"]["type"] == "Int64"
    assert birth["metrics"]["Node Control/Rebirth"] == {
        "name": "Node Control/Rebirth",
        "type": "Boolean",
        "value": False,
    }
    expected = {
        "Verdict": "String",
        "Reason": "String",
        "State": "String",
        "Health": "String",
        "Recipe": "String",
        "Model": "String",
        "RunId": "String",
        "Seq": "Int64",
        "FrameId": "Int64",
        "Passed": "Int64",
        "Failed": "Int64",
        "Errors": "Int64",
        "Missed": "Int64",
        "Score": "Double",
        "Threshold": "Double",
    }  # fmt: skip  (the table in docs/plc.md)
    assert {name: m["type"] for name, m in device_birth["metrics"].items()} == expected
    after_birth = [payload["seq"] for topic, payload in messages[1:] if "/NDEATH/" not in topic]
    assert after_birth == [(i + 1) % 256 for i in range(len(after_birth))]  # seq counts every message, wraps
    data = [payload["metrics"] for topic, payload in messages if "/DDATA/" in topic and "Verdict" in payload["metrics"]]
    assert [m["Seq"]["value"] for m in data] == list(range(300))
    assert data[3]["Verdict"]["value"] == "error" and data[3]["Score"].get("null") is True
    assert data[1]["Score"]["value"] == pytest.approx(0.9001) and data[1]["Verdict"]["value"] == "fail"
    death = next(payload for topic, payload in messages if topic == "spBv1.0/plant/NDEATH/node1")
    assert death["metrics"]["bdSeq"]["value"] == birth["metrics"]["bdSeq"]["value"]


def test_twenty_stations_through_one_bridge_into_the_broker(broker: Broker, tmp_path: Path) -> None:
    count, verdicts, rate = 20, 100, 20.0  # per station: 2,000 verdicts at 400 a second in all
    subscriber = Subscriber(broker, f"{PREFIX}/+/verdict", tmp_path / "fleet.txt")
    endpoints, stations = bound_stations([f"s{i:02d}" for i in range(count)])
    flags = [flag for i, e in enumerate(endpoints) for flag in ("--station", f"s{i:02d}={e}")]
    bridge, metrics, _ = start_bridge(
        *flags, "--opcua", "off", "--modbus", "off", "--mqtt", broker.url, "--mqtt-prefix", PREFIX,
        "--mqtt-queue", str(tmp_path / "queue"),
    )  # fmt: skip
    try:
        time.sleep(2.0)  # every feed subscribed
        ticks = os.sysconf("SC_CLK_TCK")
        cpu_before = sum(map(int, Path(f"/proc/{bridge.pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
        started = time.monotonic()
        for i in range(verdicts):
            for station in stations:
                station.verdict(i)
            if i % 10 == 0:
                for station in stations:
                    station.heartbeat()
            time.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
        wait_for(lambda: len(subscriber.verdicts()) >= count * verdicts, 60, "every station's verdicts")
        seconds = time.monotonic() - started
        cpu = sum(map(int, Path(f"/proc/{bridge.pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
        published = scrape(metrics)["edge_bridge_mqtt_published_total"]
    finally:
        bridge.terminate()
        bridge.wait(timeout=20)
        subscriber.close()
        for station in stations:
            station.close()
    by_station: dict[str, list[int]] = {}
    for verdict in once_in_order(subscriber.verdicts())[0]:
        by_station.setdefault(verdict["station"], []).append(verdict["seq"])
    assert len(by_station) == count and all(seqs == list(range(verdicts)) for seqs in by_station.values())
    assert published >= count * verdicts
    print(f"{count * verdicts / seconds:.0f} verdicts/s through one bridge, bridge CPU "
          f"{(cpu - cpu_before) / ticks / seconds:.0%} of a core")  # fmt: skip


def test_mqtt_settings_are_checked_with_one_line_each(tmp_path: Path) -> None:
    cases = {
        "scheme": (["--mqtt", "http://h:1883"], "write mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"),
        "prefix": (["--mqtt", "mqtt://h", "--mqtt-prefix", "a/#"], "no '+', '#' or outer '/'"),
        "format": (["--mqtt", "mqtt://h", "--mqtt-format", "xml"], "invalid choice"),
        "key": (["--mqtt", "mqtts://h", "--mqtt-certificate", str(tmp_path / "c.pem")], "needs mqtt_private_key"),
    }
    for name, (args, problem) in cases.items():
        result = subprocess.run(
            [*BRIDGE, "--station", "a=tcp://127.0.0.1:1", "--opcua", "off", "--modbus", "off", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2 and problem in result.stderr and "Traceback" not in result.stderr, name
    with socket.socket() as closed:  # a broker that is not there: the bridge starts, and queues
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    bridge, metrics, log = start_bridge(
        "--station", "a=tcp://127.0.0.1:1", "--opcua", "off", "--modbus", "off", "--mqtt", f"mqtt://127.0.0.1:{port}",
        "--mqtt-queue", str(tmp_path / "queue"),
    )  # fmt: skip
    try:
        assert scrape(metrics)["edge_bridge_mqtt_connected"] == 0
    finally:
        bridge.terminate()
        assert bridge.wait(timeout=20) == 0, "".join(log)


def test_the_console_fleet_view_reads_the_stations_from_the_broker(broker: Broker, tmp_path: Path) -> None:
    pytest.importorskip("starlette", reason="the console extra is not installed")
    import urllib.request

    from tests.test_console import console_command

    endpoints, stations = bound_stations([f"line{i}/cam1" for i in range(2)])
    flags = [flag for i, e in enumerate(endpoints) for flag in ("--station", f"line{i}/cam1={e}")]
    bridge, _, _ = start_bridge(
        *flags, "--opcua", "off", "--modbus", "off", "--mqtt", broker.url, "--mqtt-prefix", PREFIX,
        "--mqtt-queue", str(tmp_path / "queue"), "--mqtt-client-id", "bridge7",
    )  # fmt: skip
    web = free_port()
    console = subprocess.Popen(
        console_command("--mqtt", broker.url, "--mqtt-prefix", PREFIX, "--listen", f"127.0.0.1:{web}"),
        stderr=subprocess.DEVNULL,
    )

    def fleet() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/events", timeout=10) as stream:
            for line in stream:
                if line.startswith(b"data: "):
                    return {s["name"]: s for s in json.loads(line[6:])["stations"]}
        return {}

    stop_beating = threading.Event()

    def keep_beating() -> None:  # a live station goes on heartbeating while the test reads the console
        # (a station's socket belongs to one thread: once this one starts, the test leaves the stations alone)
        while not stop_beating.wait(0.2):
            for station in stations:
                station.heartbeat()

    beater = threading.Thread(target=keep_beating, daemon=True)
    try:
        wait_port(web, console)
        time.sleep(1.0)
        for i in range(30):
            for station in stations:
                station.verdict(i)
                station.heartbeat()
            time.sleep(0.05)
        beater.start()
        shown = wait_for(
            lambda: (f := fleet()) and all(s["counters"]["pass"] + s["counters"]["fail"] + s["counters"]["error"]
                                           == 30 for s in f.values()) and len(f) == 2 and f,
            30, "both stations' counters on the console",
        )  # fmt: skip
        assert shown["line0/cam1"]["last"]["seq"] == 29 and shown["line1/cam1"]["state"] == "running"
        bridge.send_signal(signal.SIGKILL)  # its will: the console shows its stations offline
        bridge.wait(timeout=10)
        wait_for(lambda: all(s["state"] == "offline" for s in fleet().values()), 40, "offline after the will")
    finally:
        for process in (bridge, console):
            if process.poll() is None:
                process.kill()
        stop_beating.set()
        if beater.is_alive():
            beater.join()
        for station in stations:
            station.close()
