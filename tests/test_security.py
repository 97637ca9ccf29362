"""CURVE: a known subscriber receives everything; an unknown key, a wrong server key and a plaintext (NULL)
subscriber receive nothing; missing keys stop start-up."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import zmq

from edge.client import VerdictSubscriber
from edge.publish import PublishError, VerdictPublisher
from edge.security import CurveServer, make_keys
from tests.test_runtime import cli, free_endpoint


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    found = {}
    for name in ("station", "plc", "stranger", "impostor"):
        found[name + ".key"], found[name + ".key_secret"] = make_keys(root / name, name)
    allow = root / "allow"
    allow.mkdir()
    (allow / "plc.key").write_bytes(found["plc.key"].read_bytes())
    found["allow"] = allow
    return found


def received(subscriber: VerdictSubscriber, seconds: float) -> int:
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        count += sum(1 for kind, _ in subscriber.poll(0.1) if kind == "verdict")
    return count


def test_only_the_known_subscriber_receives(keys: dict[str, Path]) -> None:
    endpoint = free_endpoint()
    curve = CurveServer(keys["station.key_secret"], keys["allow"])
    publisher = VerdictPublisher(endpoint, "s", curve=curve)
    known = VerdictSubscriber(endpoint, curve=(keys["plc.key_secret"], keys["station.key"]))
    unknown = VerdictSubscriber(endpoint, curve=(keys["stranger.key_secret"], keys["station.key"]))
    wrong_server = VerdictSubscriber(endpoint, curve=(keys["plc.key_secret"], keys["impostor.key"]))
    plaintext = VerdictSubscriber(endpoint)
    try:
        assert publisher.wait_subscribers(1, 10)
        time.sleep(0.5)  # give the refused ones every chance to get in
        for i in range(20):
            publisher.verdict({"frame_id": i, "verdict": "pass"})
        assert received(known, 1.0) == 20
        assert received(unknown, 0.3) == received(wrong_server, 0.3) == received(plaintext, 0.3) == 0
        assert publisher.subscribers == 1
    finally:
        for s in (known, unknown, wrong_server, plaintext):
            s.close()
        publisher.close(0)
        curve.stop()


def test_missing_keys_stop_start_up(keys: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="cannot read the secret key"):
        VerdictPublisher(free_endpoint(), "s", curve=CurveServer(tmp_path / "none.key_secret", keys["allow"]))
    with pytest.raises(PublishError, match="holds no secret key"):
        VerdictPublisher(free_endpoint(), "s", curve=CurveServer(keys["station.key"], keys["allow"]))
    with pytest.raises(PublishError, match="no client public keys"):
        VerdictPublisher(free_endpoint(), "s", curve=CurveServer(keys["station.key_secret"], tmp_path))


def test_edge_run_refuses_half_a_curve_configuration(onnx_engine: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *cli("run_main"),
            "--engine",
            str(onnx_engine),
            "--camera",
            f"folder://{tmp_path}",
            "--threshold",
            "0.5",
            "--curve-secret",
            str(keys["station.key_secret"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "CURVE needs both" in result.stderr


def test_curve_socket_options_are_really_set(keys: dict[str, Path]) -> None:
    endpoint = free_endpoint()
    curve = CurveServer(keys["station.key_secret"], keys["allow"])
    publisher = VerdictPublisher(endpoint, "s", curve=curve)
    try:
        assert publisher._socket.getsockopt(zmq.MECHANISM) == zmq.CURVE
    finally:
        publisher.close(0)
        curve.stop()
