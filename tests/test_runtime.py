"""The line runtime: one verdict per captured frame, in order, over ZeroMQ to another process; faults become
error verdicts; bad set-ups are refused before anything runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from edge.client import VerdictSubscriber
from edge.config import ConfigError, StationConfig
from edge.engines import Engine, open_engine
from edge.judge import Thresholds, judge, regions
from edge.pipeline import Pipeline, PipelineOptions
from edge.publish import PublishError, VerdictPublisher
from edge.sidecar import FrameSpec
from edge.sinks import JsonlSink, RejectStore, reject_pictures
from edge.sources import FolderSource, VideoSource

SCHEMA = json.loads((Path(__file__).parents[1] / "edge" / "schemas" / "messages.schema.json").read_text())


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def cli(name: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; from edge.cli import {name} as m; sys.exit(m(sys.argv[1:]))"]


def station(engine: Path, camera: str, endpoint: str, *extra: str) -> list[str]:
    """The ``edge-run`` command line for a test station."""
    return [*cli("run_main"), "--engine", str(engine), "--camera", camera, "--publish", endpoint, *extra]


def offline_verdicts(engine_path: Path, folder: Path, threshold: float) -> dict[str, tuple[str, float]]:
    """What each readable, right-sized image should get, from the engine run directly."""
    expected = {}
    with open_engine(engine_path) as engine:
        for path in sorted(folder.glob("*.png")):
            image = cv2.imread(str(path))
            if image is None or image.shape[:2] != (64, 64):
                continue
            out = engine.infer(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)[None])
            verdict, _, _ = judge(
                float(out.score[0]), out.anomaly_map[0, 0], Thresholds(threshold, threshold, "t"), engine.frame
            )
            expected[path.name] = (verdict, float(out.score[0]))
    return expected


def test_folder_to_subscriber_process_one_verdict_per_image(
    onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    with open_engine(onnx_engine) as engine:
        frame = cv2.cvtColor(cv2.imread(str(sorted(part_folder.glob("*.png"))[0])), cv2.COLOR_BGR2RGB)
        engine.infer(frame[None])
    scores = [s for _, s in offline_verdicts(onnx_engine, part_folder, 0.5).values()]
    threshold = float(np.median(scores))
    expected = offline_verdicts(onnx_engine, part_folder, threshold)
    endpoint = free_endpoint()
    received = tmp_path / "received.jsonl"
    listener = subprocess.Popen(
        [*cli("listen_main"), endpoint, "--jsonl", str(received), "--quiet"], stdout=subprocess.PIPE, text=True
    )
    run = subprocess.run(
        station(
            str(onnx_engine),
            f"folder://{part_folder}",
            endpoint,
            "--threshold",
            str(threshold),
            "--station",
            "line1",
            "--wait-timeout",
            "30",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(listener.communicate(timeout=30)[0].strip().splitlines()[-1])
    verdicts = [json.loads(line) for line in received.read_text().splitlines()]
    names = sorted(p.name for p in part_folder.glob("*.png"))
    assert len(verdicts) == len(names) == summary["verdicts"] and summary["missing"] == 0
    assert [v["seq"] for v in verdicts] == list(range(len(names)))
    assert [v["frame_id"] for v in verdicts] == list(range(len(names)))
    by_name = dict(zip(names, verdicts, strict=True))
    assert by_name["050_broken.png"]["verdict"] == "error" and by_name["050_broken.png"]["reason"] == "unreadable_image"
    assert by_name["051_wrong_size.png"]["reason"] == "frame_format"
    for name, (verdict, score) in expected.items():
        assert by_name[name]["verdict"] == verdict, name
        assert by_name[name]["score"] == pytest.approx(score, abs=1e-5)
    assert {v["verdict"] for v in verdicts} == {"pass", "fail", "error"}
    for v in verdicts:
        jsonschema.validate(v, SCHEMA)
    assert "2 error" in run.stderr


class FaultyEngine(Engine):
    """Fault injection around a real engine: raise on some calls, return NaN on others, or be slow."""

    backend = "faulty"

    def __init__(self, inner: Engine, raise_on=(), nan_on=(), delay_s: float = 0.0) -> None:
        super().__init__(inner.path, inner.sidecar)
        self.inner, self.raise_on, self.nan_on, self.delay_s, self.calls = inner, set(raise_on), set(nan_on), delay_s, 0

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _infer(self, frames):
        call, self.calls = self.calls, self.calls + 1
        time.sleep(self.delay_s)
        if call in self.raise_on:
            raise RuntimeError("injected engine failure")
        out = self.inner.infer(frames)
        if call in self.nan_on:
            return np.full_like(out.score, np.nan), out.anomaly_map
        return out.score, out.anomaly_map


def until_final(subscriber: VerdictSubscriber) -> list[tuple[str, dict]]:
    """The messages a subscriber receives up to and including the publisher's final status."""
    messages = []
    for kind, payload in subscriber.messages(timeout_s=5):
        messages.append((kind, payload))
        if payload.get("final"):
            break
    return messages


def run_in_process(
    engine: Engine,
    source,
    endpoint: str,
    sinks: list | None = None,
    threshold: float = 0.5,
    subscribers: int = 1,
    **options,
) -> tuple[Pipeline, list[tuple[str, dict]]]:
    """Run ``source`` (a folder path, or an opened-on-demand Source) through the pipeline with a subscriber,
    once ``subscribers`` verdict subscribers (this one and those the caller connected) are in."""
    if isinstance(source, Path):
        source = FolderSource(source, "rgb8", fps=options.pop("fps", 0.0))
    publisher = VerdictPublisher(endpoint, "test")
    subscriber = VerdictSubscriber(endpoint)
    assert publisher.wait_subscribers(subscribers, 10)
    source.open()
    try:
        with engine:
            thresholds = Thresholds(threshold, threshold, "t")
            options = PipelineOptions(station="test", **options)
            pipeline = Pipeline(source, engine, publisher, thresholds, options, sinks)
            pipeline.run()
        publisher.status({"state": "stopped", "final": True, "health": pipeline.health})
        return pipeline, until_final(subscriber)
    finally:
        source.close()
        subscriber.close()
        publisher.close(0)


def test_engine_failures_and_nan_become_error_verdicts(onnx_engine: Path, part_folder: Path) -> None:
    engine = FaultyEngine(open_engine(onnx_engine), raise_on={1}, nan_on={2})
    pipeline, messages = run_in_process(engine, part_folder, free_endpoint(), max_batch=1)
    verdicts = [p for k, p in messages if k == "verdict"]
    counters = pipeline.counters
    assert counters.frames == counters.verdicts == len(verdicts) == len(list(part_folder.glob("*.png")))
    assert [v["seq"] for v in verdicts] == list(range(len(verdicts)))
    assert verdicts[1]["reason"] == "engine_error" and "injected" in verdicts[1]["detail"]
    assert verdicts[2]["reason"] == "invalid_output" and verdicts[2]["score"] is None
    assert counters.errors["engine_error"] == 1 and counters.errors["invalid_output"] == 1
    for _kind, payload in messages:
        jsonschema.validate(payload, SCHEMA)
    assert any(k == "heartbeat" for k, _ in messages)


def test_a_slow_engine_overruns_the_queue_but_every_frame_is_accounted(onnx_engine: Path, part_folder: Path) -> None:
    engine = FaultyEngine(open_engine(onnx_engine), delay_s=0.15)
    pipeline, messages = run_in_process(engine, part_folder, free_endpoint(), fps=50, max_batch=1, queue_size=2)
    verdicts = [p for k, p in messages if k == "verdict"]
    assert len(verdicts) == pipeline.counters.frames == len(list(part_folder.glob("*.png")))
    assert [v["frame_id"] for v in verdicts] == sorted(v["frame_id"] for v in verdicts)
    assert pipeline.counters.errors["overrun"] >= 5
    assert pipeline.counters.passed + pipeline.counters.failed >= 2


def test_batches_fill_up_to_the_engine_maximum(onnx_engine: Path, part_folder: Path) -> None:
    pipeline, messages = run_in_process(
        open_engine(onnx_engine), part_folder, free_endpoint(), max_batch=4, batch_timeout_ms=200, queue_size=64
    )
    batches = [p["batch"] for k, p in messages if k == "verdict" and p["reason"] is None]
    assert max(batches) == 4 and pipeline.counters.frames == pipeline.counters.verdicts


def test_regions_are_boxes_in_frame_pixels() -> None:
    amap = np.zeros((64, 64), np.float32)
    amap[10:20, 30:34] = 0.9
    amap[50, 5] = 0.6
    found = regions(amap, 0.5, FrameSpec(400, 300, "mono8", roi=(100, 50, 128, 128)))
    assert found[0] == {"x": 100 + 60, "y": 50 + 20, "w": 8, "h": 20, "area": 160, "peak": 0.9}
    assert found[1]["peak"] == 0.6 and len(found) == 2


def test_regions_match_a_plain_count_of_every_area() -> None:
    """Each area's box, size and peak as connectedComponentsWithStats and a maximum over its own pixels give them,
    on smooth, speckled and stepped maps at many thresholds."""
    import cv2

    rng = np.random.default_rng(0)
    spec = FrameSpec(400, 300, "mono8", roi=(100, 50, 128, 128))
    for _ in range(300):
        size = int(rng.choice([16, 33, 64]))
        amap = rng.random((size, size)).astype(np.float32)
        amap = cv2.GaussianBlur(amap, (0, 0), float(rng.choice([0.5, 2.0]))) if rng.random() < 0.7 else amap
        amap = np.round(amap * 4) / 4 if rng.random() < 0.2 else amap  # plateaus
        threshold = float(np.quantile(amap, rng.choice([0.0, 0.5, 0.9, 0.99])))
        count, labels, stats, _ = cv2.connectedComponentsWithStats((amap >= threshold).astype(np.uint8), 8)
        expected = {
            (int(100 + x * 128 / size), int(50 + y * 128 / size), round(float(amap[labels == i].max()), 4), area)
            for i, (x, y, _, _, area) in enumerate(stats)
            if i
        }
        found = regions(amap, threshold, spec, limit=count)
        assert {(r["x"], r["y"], r["peak"], round(r["area"] / (128 / size) ** 2)) for r in found} == expected
        assert [r["peak"] for r in found] == sorted((r["peak"] for r in found), reverse=True)


def test_reject_store_keeps_within_its_limits(tmp_path: Path) -> None:
    from edge.sources import Frame
    from edge.verdict import Job

    store = RejectStore(tmp_path / "rejects", FrameSpec(32, 32, "mono8"), max_files=3)
    for i in range(8):
        job = Job(i, Frame(i, 0, 0, np.full((32, 32), i * 20, np.uint8)), anomaly_map=np.random.rand(16, 16))
        verdict = {"verdict": "fail", "time": f"2026-01-01T00:00:0{i}.000Z", "frame_id": i, "score": 0.9}
        verdict |= {"station": "s", "seq": i, "camera": "", "threshold": 0.5, "pixel_threshold": 0.5, "regions": []}
        store.write(verdict | {"reason": None, "model": "sha256:" + "0" * 64}, job)
        time.sleep(0.02)
    store.close()
    files = sorted(p.name for p in reject_pictures(tmp_path / "rejects"))
    assert len(files) == 3 and store.saved + store.dropped == 8
    assert files[-1].endswith("_00000007_0.900.png") or store.dropped > 0


def test_video_source_reads_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    for i in range(5):
        writer.write(np.full((32, 48, 3), i * 40, np.uint8))
    writer.release()
    with VideoSource(path, "mono8") as source:
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
    assert [f.frame_id for f in frames] == list(range(5)) and frames[0].pixels.shape == (32, 48)


def test_a_preloaded_folder_serves_the_same_frames_from_memory(tmp_path: Path, monkeypatch) -> None:
    from edge.sources import files, open_source

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((16, 24, 3), 50 * i, np.uint8))
    (tmp_path / "3.png").write_bytes(b"not a png")

    def frames(uri: str, count: int) -> list:
        with open_source(uri, "rgb8") as source:
            return [source.read() for _ in range(count)]

    plain, preloaded = frames(f"folder://{tmp_path}?loop=1", 8), frames(f"folder://{tmp_path}?loop=1&preload=1", 8)
    for a, b in zip(plain, preloaded, strict=True):
        assert (a.frame_id, a.name, a.error) == (b.frame_id, b.name, b.error)
        assert (a.pixels is None and b.pixels is None) or np.array_equal(a.pixels, b.pixels)
    assert [f.error for f in preloaded].count("unreadable_image") == 2  # the broken file, on each pass
    with open_source(f"folder://{tmp_path}?loop=1&preload=1", "rgb8") as source:
        (tmp_path / "1.png").unlink()  # decoded at open: the file is no longer read
        assert [source.read().pixels[0, 0, 0] for _ in range(2)] == [0, 50]
    monkeypatch.setattr(files, "PRELOAD_LIMIT", 1000)
    with pytest.raises(files.SourceError, match="preload=1 would hold over"):
        frames(f"folder://{tmp_path}?preload=1", 1)


def test_config_file_then_flags_and_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text('[station]\nengine = "a.onnx"\ncamera = "basler0"\nqueue_size = 4\nthreshold = 0.4\n')
    config = StationConfig.load(path, {"queue_size": 16, "threshold": None})
    assert (config.engine, config.queue_size, config.threshold) == ("a.onnx", 16, 0.4)
    path.write_text('engine = "a.onnx"\ncamera = "basler0"\nqueue_sise = 4\n')
    with pytest.raises(ConfigError, match="unknown setting 'queue_sise'"):
        StationConfig.load(path, {})
    path.write_text('engine = "a.onnx"\ncamera = "basler0"\nqueue_size = "many"\n')
    with pytest.raises(ConfigError, match="'queue_size' must be a whole number, got 'many'"):
        StationConfig.load(path, {})
    with pytest.raises(ConfigError, match="'camera' is required"):
        StationConfig.load(None, {"engine": "a.onnx"})


def test_the_example_station_config_loads_as_shipped_and_with_curve_on(tmp_path: Path) -> None:
    example = Path(__file__).parents[1] / "deploy" / "station.toml"
    config = StationConfig.load(example, {})
    assert (config.trigger, config.control, config.curve_secret) == ("line1", "tcp://127.0.0.1:5558", None)
    with_curve = tmp_path / "station.toml"
    with_curve.write_text(example.read_text().replace("# curve_", "curve_").replace("# control_allow", "control_allow"))
    assert StationConfig.load(with_curve, {}).control_allow == "/etc/edge/operators"


def test_second_publisher_on_the_same_port_is_refused() -> None:
    endpoint = free_endpoint()
    first = VerdictPublisher(endpoint, "a")
    try:
        with pytest.raises(PublishError, match="another edge-run on that port"):
            VerdictPublisher(endpoint, "b")
    finally:
        first.close(0)


@pytest.mark.parametrize(
    "case",
    [
        "missing engine",
        "no sidecar",
        "hash mismatch",
        "no threshold",
        "bad config",
        "port in use",
        "rejects unwritable",
    ],
)
def test_bad_setups_are_refused_with_one_line(case: str, onnx_engine: Path, part_folder: Path, tmp_path: Path) -> None:
    engine, args, blocker = onnx_engine, [], None
    endpoint = free_endpoint()
    if case == "missing engine":
        engine, expect = tmp_path / "none.onnx", "artefact not found"
    elif case == "no sidecar":
        engine = tmp_path / "copy.onnx"
        shutil.copy(onnx_engine, engine)
        expect = "has no sidecar"
    elif case == "hash mismatch":
        engine = tmp_path / "copy.onnx"
        engine.write_bytes(onnx_engine.read_bytes() + b"\0")
        shutil.copy(str(onnx_engine) + ".json", str(engine) + ".json")
        expect = "does not match its sidecar"
    elif case == "no threshold":
        expect = "no calibrated threshold"
    elif case == "bad config":
        (tmp_path / "s.toml").write_text("queue_size = -1\n")
        args, expect = ["--config", str(tmp_path / "s.toml")], "'queue_size' must be positive"
    elif case == "rejects unwritable":
        (tmp_path / "taken").write_text("a file")
        args, expect = ["--rejects", str(tmp_path / "taken" / "rejects")], "give --jsonl/--rejects a writable place"
    else:
        blocker, expect = VerdictPublisher(endpoint, "x"), "another edge-run on that port"
    if case != "no threshold":
        args += ["--threshold", "0.5"]
    try:
        result = subprocess.run(
            station(str(engine), f"folder://{part_folder}", endpoint, *args),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        if blocker:
            blocker.close(0)
    assert result.returncode == 2 and expect in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_drains_and_publishes_a_final_status(onnx_engine: Path, part_folder: Path) -> None:
    endpoint = free_endpoint()
    subscriber = VerdictSubscriber(endpoint)
    process = subprocess.Popen(
        station(
            str(onnx_engine),
            f"folder://{part_folder}?loop=1",
            endpoint,
            "--threshold",
            "0.5",
            "--wait-subscribers",
            "1",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    final, verdicts = None, 0
    try:
        for kind, payload in subscriber.messages(timeout_s=60):
            if kind == "verdict":
                verdicts += 1
                if verdicts == 20:
                    process.send_signal(signal.SIGTERM)
            if payload.get("final"):
                final = payload
                break
        assert process.wait(timeout=30) == 0
    finally:
        subscriber.close()
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    assert final is not None and final["state"] == "stopped"
    assert final["counters"]["frames"] == final["counters"]["verdicts"] == subscriber.state.verdicts
    assert subscriber.state.missing == 0


def test_files_wait_for_a_slow_engine_instead_of_overrunning(onnx_engine: Path, part_folder: Path) -> None:
    engine = FaultyEngine(open_engine(onnx_engine), delay_s=0.05)
    pipeline, _ = run_in_process(engine, part_folder, free_endpoint(), max_batch=1, queue_size=1)
    assert pipeline.counters.errors["overrun"] == 0
    assert pipeline.counters.frames == pipeline.counters.verdicts == len(list(part_folder.glob("*.png")))


def test_a_frame_past_its_deadline_gets_an_error_and_its_late_result_is_dropped(
    onnx_engine: Path, part_folder: Path
) -> None:
    engine = FaultyEngine(open_engine(onnx_engine), delay_s=0.0)
    engine.slow_call, engine.slow_s = 2, 0.8

    original = engine._infer

    def infer(frames):
        if engine.calls == engine.slow_call:
            time.sleep(engine.slow_s)
        return original(frames)

    engine._infer = infer
    # A camera at 2 frames/s: frame 2's inference takes 0.8 s, past the 0.6 s deadline; frame 3 waits 0.3 s.
    pipeline, messages = run_in_process(
        engine, part_folder, free_endpoint(), fps=2, max_batch=1, verdict_deadline_ms=600, max_frames=6
    )
    verdicts = [p for k, p in messages if k == "verdict"]
    assert [v["seq"] for v in verdicts] == list(range(len(verdicts))) == [v["frame_id"] for v in verdicts]
    assert verdicts[2]["reason"] == "deadline" and verdicts[2]["verdict"] == "error"
    assert [v["reason"] for v in verdicts].count("deadline") == 1 and pipeline.late_results == 1
    assert pipeline.counters.frames == pipeline.counters.verdicts == 6


def test_watchdog_marks_a_silent_live_source_degraded(onnx_engine: Path, tmp_path: Path) -> None:
    from edge.sources import Source

    class Silent(Source):
        uri, finite, live = "silent://", False, True

        def open(self) -> None: ...

        def close(self) -> None: ...

        def read(self, timeout: float = 1.0):
            time.sleep(timeout)
            raise TimeoutError

    endpoint = free_endpoint()
    publisher, subscriber = VerdictPublisher(endpoint, "w"), VerdictSubscriber(endpoint)
    assert publisher.wait_subscribers(1, 10)
    engine = open_engine(onnx_engine)
    options = PipelineOptions(station="w", heartbeat_s=0.2, stall_s=0.5)
    with engine:
        pipeline = Pipeline(Silent(), engine, publisher, Thresholds(0.5, 0.5, "t"), options)
        import threading

        threading.Timer(2.0, pipeline.stop.set).start()
        pipeline.run()
    statuses = [p for k, p in subscriber.messages(timeout_s=1) if k == "status"]
    subscriber.close()
    publisher.close(0)
    assert any(s["health"] == "degraded" and "no frames" in s["reason"] for s in statuses)
    assert pipeline.counters.verdicts == 0  # never a pass without a frame


def test_a_frozen_publisher_is_declared_down_within_three_heartbeats(onnx_engine: Path, part_folder: Path) -> None:
    endpoint = free_endpoint()
    subscriber = VerdictSubscriber(endpoint)
    process = subprocess.Popen(
        station(
            str(onnx_engine),
            f"folder://{part_folder}?loop=1&fps=5",
            endpoint,
            "--threshold",
            "0.5",
            "--heartbeat-s",
            "0.25",
            "--wait-subscribers",
            "1",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while subscriber.state.verdicts < 3 and time.monotonic() < deadline:
            subscriber.poll(0.5)
        assert subscriber.state.verdicts >= 3 and not subscriber.link_down()
        process.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        while not subscriber.link_down() and time.monotonic() - frozen < 5:
            subscriber.poll(0.05)
        noticed = time.monotonic() - frozen
        assert subscriber.link_down() and noticed <= 3 * 0.25 + 0.5
        process.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        while subscriber.link_down() and time.monotonic() - resumed < 5:
            subscriber.poll(0.05)
        assert not subscriber.link_down()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        subscriber.close()
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()


def test_systemd_hears_ready_watchdog_and_stopping(onnx_engine: Path, part_folder: Path, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.5)
    try:
        result = subprocess.run(
            station(
                str(onnx_engine),
                f"folder://{part_folder}",
                free_endpoint(),
                "--threshold",
                "0.5",
                "--wait-subscribers",
                "0",
                "--heartbeat-s",
                "0.2",
            ),
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "NOTIFY_SOCKET": address},
        )
        assert result.returncode == 0, result.stderr
        messages = []
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                break
    finally:
        sock.close()
    assert messages[0].startswith("READY=1") and "WATCHDOG=1" in messages and messages[-1] == "STOPPING=1"


def test_a_late_joiner_gets_status_and_the_last_verdicts_then_follows_seq(onnx_engine: Path, part_folder: Path) -> None:
    import zmq

    endpoint, snapshot_endpoint = free_endpoint(), free_endpoint()
    process = subprocess.Popen(
        station(
            str(onnx_engine),
            f"folder://{part_folder}?loop=1&fps=10",
            endpoint,
            "--snapshot",
            snapshot_endpoint,
            "--threshold",
            "0.5",
            "--wait-subscribers",
            "0",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    request = zmq.Context.instance().socket(zmq.REQ)
    request.setsockopt(zmq.LINGER, 0)
    request.connect(snapshot_endpoint)
    subscriber = None
    try:
        time.sleep(3)  # the station has been running a while: this subscriber joins late
        subscriber = VerdictSubscriber(endpoint)
        deadline = time.monotonic() + 20
        seen = []  # the protocol: subscribe first, then ask for the snapshot, then drop what it already holds
        while not seen and time.monotonic() < deadline:
            seen = [p["seq"] for k, p in subscriber.poll(0.2) if k == "verdict"]
        request.send(b'{"last": 5}')
        assert request.poll(10000)
        snapshot = json.loads(request.recv())
        assert snapshot["status"]["health"] in ("ok", "degraded") and len(snapshot["verdicts"]) == 5
        last = snapshot["verdicts"][-1]["seq"]
        assert [v["seq"] for v in snapshot["verdicts"]] == list(range(last - 4, last + 1))
        assert seen[0] > 0  # it missed the start: the snapshot is what tells it about earlier parts
        followed = [q for q in seen if q > last]
        while len(followed) < 3 and time.monotonic() < deadline:
            followed += [p["seq"] for k, p in subscriber.poll(0.2) if k == "verdict" and p["seq"] > last]
        assert followed[:3] == [last + 1, last + 2, last + 3]  # no gap between snapshot and stream
        request.send(b"not json")
        assert request.poll(10000) and "error" in json.loads(request.recv())
    finally:
        request.close()
        if subscriber is not None:
            subscriber.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_a_stalled_subscriber_never_blocks_the_publisher_and_the_gap_is_exact() -> None:
    import zmq

    endpoint = free_endpoint()
    publisher = VerdictPublisher(endpoint, "hwm", high_water_mark=20)
    subscriber = VerdictSubscriber(endpoint, kinds=("verdict",))
    subscriber._socket.setsockopt(zmq.RCVHWM, 20)
    try:
        assert publisher.wait_subscribers(1, 10)
        started = time.perf_counter()
        for i in range(5000):
            publisher.verdict({"frame_id": i, "verdict": "pass"})
        assert time.perf_counter() - started < 5  # never blocked on the subscriber that does not read
        seqs = [p["seq"] for k, p in subscriber.messages(timeout_s=1)]
        assert 0 < len(seqs) < 5000
        state = subscriber.state
        assert state.missing == seqs[-1] + 1 - len(seqs) and state.gaps  # every lost verdict is counted
    finally:
        subscriber.close()
        publisher.close(0)


def test_sigterm_with_an_unreachable_subscriber_exits_within_the_linger(onnx_engine: Path, part_folder: Path) -> None:
    endpoint = free_endpoint()
    frozen = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, zmq; s = zmq.Context().socket(zmq.SUB); "
            "s.setsockopt(zmq.SUBSCRIBE, b''); s.setsockopt(zmq.RCVHWM, 1); s.connect(sys.argv[1]); time.sleep(120)",
            endpoint,
        ],
    )
    running = subprocess.Popen(
        station(
            str(onnx_engine),
            f"folder://{part_folder}?loop=1&fps=20",
            endpoint,
            "--threshold",
            "0.5",
            "--wait-subscribers",
            "1",
            "--linger-ms",
            "500",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(4)
        frozen.send_signal(signal.SIGSTOP)  # connected, subscribed, and now unreachable
        time.sleep(1)
        stopped = time.monotonic()
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=20) == 0
        assert time.monotonic() - stopped < 5
        assert "frames →" in running.stderr.read()
    finally:
        frozen.send_signal(signal.SIGCONT)
        frozen.kill()
        if running.poll() is None:
            running.kill()


def test_a_broken_reject_folder_never_touches_the_verdicts(
    onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    store = RejectStore(tmp_path / "rejects", FrameSpec(64, 64, "rgb8"), max_files=100)
    shutil.rmtree(tmp_path / "rejects")
    (tmp_path / "rejects").write_text("a file where the folder was: every write fails")
    engine = open_engine(onnx_engine)
    pipeline, messages = run_in_process(engine, part_folder, free_endpoint(), [store], threshold=0.0, queue_size=64)
    store.close()
    verdicts = [p for k, p in messages if k == "verdict"]
    failed = sum(v["verdict"] == "fail" for v in verdicts)
    assert len(verdicts) == pipeline.counters.frames == len(list(part_folder.glob("*.png")))
    assert failed > 0 and store.saved == 0 and store.failed + store.dropped == failed


@pytest.fixture
def small_filesystem(tmp_path: Path):
    """A real 1 MiB filesystem (tmpfs: room for a few reject records), so that the disk really fills; skipped where
    mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def filled_store(onnx_engine: Path, part_folder: Path, folder: Path, **limits) -> tuple[RejectStore, list[dict]]:
    """Every image rejected (threshold 0) into a reject store at ``folder``; returns the store and the verdicts."""
    store = RejectStore(folder, FrameSpec(64, 64, "rgb8"), **limits)
    pipeline, messages = run_in_process(
        open_engine(onnx_engine), part_folder, free_endpoint(), [store], threshold=0.0, queue_size=64
    )
    store.close(timeout=30)
    verdicts = [p for k, p in messages if k == "verdict"]
    assert len(verdicts) == pipeline.counters.frames == len(list(part_folder.glob("*.png")))
    return store, verdicts


def test_a_full_disk_evicts_the_oldest_rejects_and_never_touches_the_verdicts(
    onnx_engine: Path, part_folder: Path, small_filesystem: Path
) -> None:
    foreign = small_filesystem / "not-ours.bin"
    foreign.write_bytes(b"x" * 16_000)  # someone else's file on the same disk: never removed
    store, verdicts = filled_store(onnx_engine, part_folder, small_filesystem / "rejects")
    failed = sum(v["verdict"] == "fail" for v in verdicts)
    kept = sorted(reject_pictures(small_filesystem / "rejects"))
    assert failed > 10 and store.evicted_for_space > 0 and foreign.stat().st_size == 16_000
    assert store.saved + store.dropped + store.failed == failed and store.saved > len(kept) > 0
    # what is kept is whole (no half-written PNG), and the store's record of it matches the disk
    assert all(cv2.imread(str(path)) is not None for path in kept)
    assert len(kept) == len(store._files) and {p for p, _ in store._files} == set(kept)


def test_a_read_only_reject_folder_costs_only_the_images(
    onnx_engine: Path, part_folder: Path, small_filesystem: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (small_filesystem / "rejects").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
    with caplog.at_level("WARNING", logger="edge.sinks"):
        store, verdicts = filled_store(onnx_engine, part_folder, small_filesystem / "rejects")
    failed = sum(v["verdict"] == "fail" for v in verdicts)
    assert failed > 10 and store.saved == 0 and store.failed + store.dropped == failed and store.failed > 1
    assert caplog.text.count("cannot save rejected image") == 1 and "Read-only file system" in caplog.text


class FileWatch:
    """A sink after the JSON-lines one: how many lines its file holds each time a verdict is published."""

    name, required = "watch", False

    def __init__(self, path: Path) -> None:
        self.path, self.lines_seen = path, []

    def write(self, verdict: dict, job) -> None:
        self.lines_seen.append(len(self.path.read_bytes().splitlines()))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_json_lines_are_the_published_json_flushed_whenever_the_line_waits(
    onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    record = tmp_path / "verdicts.jsonl"
    jsonl = JsonlSink(str(record), flush_s=60.0)  # only the line's idle moments flush it
    watch = FileWatch(record)
    try:
        _, messages = run_in_process(open_engine(onnx_engine), part_folder, free_endpoint(), [jsonl, watch], fps=20)
    finally:
        jsonl.close()
    verdicts = [p for k, p in messages if k == "verdict"]
    assert [json.loads(line) for line in record.read_bytes().splitlines()] == verdicts
    # paced parts leave the line idle between verdicts: every earlier verdict is in the file when the next comes
    assert watch.lines_seen == list(range(len(verdicts)))


def test_rejected_frames_heatmaps_are_published_as_png(onnx_engine: Path, part_folder: Path) -> None:
    import zmq

    endpoint = free_endpoint()
    heatmaps = zmq.Context.instance().socket(zmq.SUB)
    heatmaps.setsockopt(zmq.SUBSCRIBE, b"heatmap/")
    heatmaps.setsockopt(zmq.SUBSCRIBE, b"verdict/")  # counted by the publisher, so the run waits for this socket
    heatmaps.connect(endpoint)
    try:
        pipeline, messages = run_in_process(
            open_engine(onnx_engine), part_folder, endpoint, threshold=0.0, subscribers=2, heatmaps=True
        )
        failed = {p["seq"] for k, p in messages if k == "verdict" and p["verdict"] == "fail"}
        received = {}
        while heatmaps.poll(500):
            parts = heatmaps.recv_multipart()
            if parts[0].startswith(b"heatmap/"):
                received[int(parts[1])] = cv2.imdecode(np.frombuffer(parts[2], np.uint8), cv2.IMREAD_GRAYSCALE)
    finally:
        heatmaps.close(0)
    # best effort: a map the heatmap thread could not keep up with is dropped and counted, never sent late or twice
    assert failed and set(received) <= failed and len(received) + pipeline.heatmaps_dropped == len(failed)
    assert len(received) >= len(failed) // 2
    assert all(image.shape == (64, 64) for image in received.values())
