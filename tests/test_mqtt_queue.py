"""The MQTT output's store and forward on its own: the disk queue's bounds (the oldest dropped only past them,
counted) and order across a reopen, and a bridge killed while the broker is down whose successor sends what it
had queued, in order, once the broker is back (real Mosquitto, ``mosquitto_sub``)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("paho.mqtt.client", reason="the bridge extra is not installed")

from edge.bridge.mqtt import DiskQueue  # noqa: E402
from tests.test_bridge import Station, free_port, scrape  # noqa: E402
from tests.test_mqtt import MOSQUITTO, PREFIX, Broker, Subscriber, once_in_order, start_bridge, wait_for  # noqa: E402


def test_the_disk_queue_keeps_order_across_a_reopen_and_drops_only_the_oldest_past_its_bounds(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q", max_bytes=5_000, max_age_s=3600)
    for i in range(100):
        queue.append("line", json.dumps({"seq": i, "pad": "x" * 80}))
    queue.commit()
    assert queue.count == 100 and queue.dropped == 0  # nothing is dropped before the bounds are applied
    dropped = queue.bound()
    queue.commit()
    assert 0 < dropped == queue.dropped and queue.bytes <= 5_000 and queue.count + dropped == 100
    kept = [json.loads(payload)["seq"] for _, _, payload, _ in queue.after(0, 1000)]
    assert kept == list(range(dropped, 100))  # the oldest went, the rest in order
    queue.close()
    reopened = DiskQueue(tmp_path / "q", max_bytes=5_000, max_age_s=0.2)
    assert reopened.count == 100 - dropped
    first_id = reopened.after(0, 1)[0][0]
    reopened.remove(first_id)
    assert [json.loads(p)["seq"] for _, _, p, _ in reopened.after(0, 1000)][0] == dropped + 1
    time.sleep(0.3)
    assert reopened.bound() == 100 - dropped - 1 and reopened.count == 0  # older than the age bound: all dropped
    reopened.close()


@pytest.mark.skipif(MOSQUITTO is None, reason="Mosquitto is not installed (apt-get install -y mosquitto)")
def test_a_bridge_killed_while_the_broker_is_down_leaves_its_queue_to_the_next_one(tmp_path: Path) -> None:
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Broker(folder)  # not started yet: the broker is down
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    station = Station(endpoint, "line1", heartbeat_s=0.5)
    args = ["--station", f"line1={endpoint}", "--opcua", "off", "--modbus", "off", "--mqtt", broker.url,
            "--mqtt-prefix", PREFIX, "--mqtt-queue", str(tmp_path / "queue")]  # fmt: skip
    first, metrics, _ = start_bridge(*args)
    subscriber = None
    try:
        time.sleep(1.0)
        station.heartbeat()
        for i in range(50):
            station.verdict(i)
            time.sleep(0.01)
        wait_for(lambda: scrape(metrics)["edge_bridge_mqtt_queued"] == 50, 20, "50 verdicts queued")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        broker.start()
        subscriber = Subscriber(broker, f"{PREFIX}/+/verdict", tmp_path / "verdicts.txt")
        second, metrics, _ = start_bridge(*args)
        try:
            wait_for(lambda: len(subscriber.verdicts()) >= 50, 30, "the queued verdicts")
            wait_for(lambda: scrape(metrics)["edge_bridge_mqtt_queued"] == 0, 20, "an empty queue")
        finally:
            second.terminate()
            second.wait(timeout=20)
    finally:
        if first.poll() is None:
            first.kill()
        if subscriber is not None:
            subscriber.close()
        station.close()
        if broker.process is not None and broker.process.poll() is None:
            broker.stop()
    kept, _ = once_in_order(subscriber.verdicts())
    assert [v["seq"] for v in kept] == list(range(50))
