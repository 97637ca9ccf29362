"""The control socket: requests validated and logged; threshold changes and pauses carried out on the line with
every frame still accounted for; only this machine, or only the operators' CURVE keys, get in."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edge.client import NoAnswer, VerdictSubscriber, request
from edge.config import ConfigError, StationConfig
from edge.control import MAX_REQUEST_BYTES, ControlError, ControlServer, is_local, parse_request
from edge.engines import open_engine
from edge.judge import Thresholds
from edge.pipeline import Pipeline, PipelineOptions
from edge.publish import VerdictPublisher
from edge.security import make_keys
from edge.sources import FolderSource
from tests.test_runtime import cli as command
from tests.test_runtime import free_endpoint, station, until_final


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b"threshold 0.3", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"command": "reboot"}', "one of status, set_threshold, pause, resume"),
        (b'{"command": "set_threshold", "score": -0.5}', "score must be a finite number ≥ 0"),
        (b'{"command": "set_threshold", "score": NaN}', "score must be a finite number ≥ 0"),
        (b'{"command": "set_threshold", "score": true}', "score must be a finite number ≥ 0"),
        (b'{"command": "set_threshold"}', "needs score, pixel, or both"),
        (b'{"command": "pause", "threshold": 0.1}', "pause takes reason, not threshold"),
        (b'{"command": "pause", "reason": "' + b"x" * MAX_REQUEST_BYTES + b'"}', "at most 4096"),
    ],
)
def test_bad_requests_are_refused_with_what_to_send(raw: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse_request(raw)


def test_valid_requests_pass_and_only_this_machine_counts_as_local() -> None:
    assert parse_request(b'{"command": "set_threshold", "pixel": 0}') == {"command": "set_threshold", "pixel": 0}
    assert parse_request(b'{"command": "pause", "reason": "changeover"}')["reason"] == "changeover"
    assert all(map(is_local, ["tcp://127.0.0.1:5558", "tcp://localhost:1", "tcp://[::1]:2", "ipc:///run/edge/c"]))
    assert not any(map(is_local, ["tcp://*:5558", "tcp://0.0.0.0:5558", "tcp://10.0.0.5:5558", "tcp://eth0:1"]))


def test_a_network_control_socket_without_operator_keys_is_refused() -> None:
    with pytest.raises(ControlError, match="anyone on the network"):
        ControlServer("tcp://*:5558", lambda request, who: {})
    with pytest.raises(ConfigError, match="'tcp://0.0.0.0:5558' would let anyone on the network"):
        StationConfig.load(None, {"engine": "e.onnx", "camera": "basler0", "control": "tcp://0.0.0.0:5558"})
    with pytest.raises(ConfigError, match="control_allow needs CURVE"):
        StationConfig.load(None, {"engine": "e.onnx", "camera": "basler0", "control_allow": "ops"})


def test_threshold_change_and_pause_on_a_running_line(
    onnx_engine: Path, part_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint, control_endpoint = free_endpoint(), free_endpoint()
    publisher = VerdictPublisher(endpoint, "test")
    subscriber = VerdictSubscriber(endpoint)
    assert publisher.wait_subscribers(1, 10)
    source = FolderSource(part_folder, "rgb8", loop=True, fps=25.0)  # a live source, like a free-running camera
    source.open()
    engine = open_engine(onnx_engine)
    answers: list[dict] = []
    with engine:
        options = PipelineOptions(station="test", max_frames=60, heartbeat_s=0.2, queue_size=64)
        pipeline = Pipeline(source, engine, publisher, Thresholds(0.99, 0.99, "test"), options)
        control = ControlServer(control_endpoint, pipeline.control)

        def operator() -> None:
            for at, payload in (
                (5, {"command": "set_threshold", "score": 1.5}),  # above 1: this engine's scores are probabilities
                (10, {"command": "set_threshold", "score": 0.0}),
                (25, {"command": "pause", "reason": "changeover"}),
                (40, {"command": "resume"}),
                (45, {"command": "status"}),
            ):
                while pipeline.counters.frames < at:
                    time.sleep(0.01)
                answers.append(request(control_endpoint, payload))

        thread = threading.Thread(target=operator, daemon=True)
        with caplog.at_level("INFO", logger="edge.control"):
            thread.start()
            pipeline.run()
            thread.join(timeout=10)
        control.close()
    publisher.status({"state": "stopped", "final": True, "health": pipeline.health})
    messages = until_final(subscriber)
    subscriber.close()
    publisher.close(0)
    source.close()

    refused, answers = answers[0], answers[1:]
    assert not refused["ok"] and "probabilities, give a value in [0, 1]" in refused["error"]
    assert [a["ok"] for a in answers] == [True] * 4
    assert answers[0]["previous"]["score"] == 0.99 and answers[0]["thresholds"]["score"] == 0.0
    assert answers[3]["status"]["thresholds"] == {"score": 0.0, "pixel": 0.99, "origin": "control"}
    verdicts = [p for k, p in messages if k == "verdict"]
    assert len(verdicts) == 60 == pipeline.counters.frames == pipeline.counters.verdicts
    assert [v["seq"] for v in verdicts] == list(range(60))
    thresholds = [v["threshold"] for v in verdicts]
    changed = thresholds.index(0.0)
    assert set(thresholds[:changed]) == {0.99} and set(thresholds[changed:]) == {0.0}
    paused = [i for i, v in enumerate(verdicts) if v["reason"] == "paused"]
    assert len(paused) > 5 and paused[-1] < 59  # then resumed: judged again
    # one stretch, in which every frame is an error: paused, or its own reason (the folder's broken files)
    during = [v["reason"] for v in verdicts[paused[0] : paused[-1] + 1]]
    assert set(during) <= {"paused", "unreadable_image", "frame_format"}
    assert all("changeover" in v["detail"] for v in verdicts if v["reason"] == "paused")
    assert {v["verdict"] for v in verdicts[paused[-1] + 1 :]} >= {"fail"}
    changes = [p["control"] for k, p in messages if k == "status" and "control" in p]
    assert [c["command"] for c in changes] == ["set_threshold", "pause", "resume"]
    assert "paused" in [p["health"] for k, p in messages if k == "heartbeat"]
    assert caplog.text.count("control from") == 3  # every change logged once, with who sent it


@pytest.fixture(scope="module")
def operator_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("operator-keys")
    found = {}
    for name in ("station", "alice", "plc"):
        found[name], found[name + "_secret"] = make_keys(root / name, name)
    for folder, names in (("operators", ["alice"]), ("subscribers", ["plc"])):
        (root / folder).mkdir()
        for name in names:
            (root / folder / f"{name}.key").write_bytes(found[name].read_bytes())
        found[folder] = root / folder
    return found


def test_over_curve_only_operators_keys_control_and_subscribers_still_get_snapshots(
    onnx_engine: Path, part_folder: Path, operator_keys: dict[str, Path]
) -> None:
    keys = operator_keys
    endpoint, snapshot, control = free_endpoint(), free_endpoint(), free_endpoint().replace("127.0.0.1", "*")
    process = subprocess.Popen(
        station(
            str(onnx_engine),
            f"folder://{part_folder}?loop=1&fps=5",
            endpoint,
            "--threshold",
            "0.5",
            "--wait-subscribers",
            "0",
            "--snapshot",
            snapshot,
            "--control",
            control,
            "--curve-secret",
            str(keys["station_secret"]),
            "--curve-allow",
            str(keys["subscribers"]),
            "--control-allow",
            str(keys["operators"]),
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    control = control.replace("*", "127.0.0.1")
    try:
        alice = (keys["alice_secret"], keys["station"])
        deadline = time.monotonic() + 30
        while True:  # until the station is up and running its line
            try:
                answer = request(control, {"command": "pause", "reason": "cleaning"}, 1.0, alice)
                if answer.get("error") != "the station is not running":
                    break
                time.sleep(0.2)
            except NoAnswer:
                pass
            assert time.monotonic() < deadline and process.poll() is None
        assert answer == {"ok": True, "paused": True, "reason": "cleaning"}
        with pytest.raises(NoAnswer):  # a subscriber's key is not an operator's
            request(control, {"command": "resume"}, 1.0, (keys["plc_secret"], keys["station"]))
        with pytest.raises(NoAnswer):  # nor is no key at all
            request(control, {"command": "resume"}, 1.0)
        status = request(snapshot, {"last": 0}, 5.0, (keys["plc_secret"], keys["station"]))["status"]
        assert status["paused"] == "cleaning" and status["health"] == "paused"
        for key, expected in (("plc", 2), ("alice", 0)):  # the operator's command line, refused then admitted
            cli = [*command("control_main"), control, "resume", "--timeout", "2", "--curve-secret"]
            done = subprocess.run(
                [*cli, str(keys[f"{key}_secret"]), "--curve-server", str(keys["station"])],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == expected, done.stderr
        assert json.loads(done.stdout) == {"ok": True, "paused": False}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    log = process.stderr.read()
    # both changes logged once each, naming the operator; the refused keys never reached the station
    assert log.count("control from operator alice") == log.count("control from") >= 2
    # the pause may be logged twice: a first answer later than the polling loop's 1 s on a busy machine is sent again
    assert log.count('→ {"ok": true, "paused": false') == 1 and 1 <= log.count('→ {"ok": true, "paused": true') <= 2
