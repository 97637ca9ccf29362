"""Basler cameras through pypylon, on pylon's camera emulator (a real pylon device): software-triggered and
free-run streams judged one verdict per frame, incomplete grabs, and a camera lost and found again."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import cv2
import pytest

pylon = pytest.importorskip("pypylon.pylon", reason="pypylon is not installed (pip install pypylon)")

from edge.engines import open_engine  # noqa: E402
from edge.judge import Thresholds, judge  # noqa: E402
from edge.sources.basler import BaslerSource, CameraSettings  # noqa: E402
from tests.test_runtime import free_endpoint, run_in_process, station  # noqa: E402


@pytest.fixture(scope="module")
def camera_images(brick_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("emulator")
    paths = sorted((brick_dataset / "test").rglob("*.png"))[:6]
    for i, path in enumerate(paths):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.imread(str(path)))
    return folder


def expected_verdicts(engine_path: Path, folder: Path, threshold: float) -> list[str]:
    with open_engine(engine_path) as engine:
        out = []
        for path in sorted(folder.glob("*.png")):
            result = engine.infer(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)[None])
            out.append(
                judge(
                    float(result.score[0]), result.anomaly_map[0, 0], Thresholds(threshold, threshold, ""), engine.frame
                )[0]
            )
    return out


@pytest.mark.parametrize("trigger", ["software", "free"])
def test_emulated_camera_stream_gets_one_verdict_per_frame(
    trigger: str, onnx_engine: Path, camera_images: Path, tmp_path: Path
) -> None:
    threshold = 0.5
    expected = expected_verdicts(onnx_engine, camera_images, threshold)
    out = tmp_path / "verdicts.jsonl"
    result = subprocess.run(
        station(
            str(onnx_engine),
            "basler1",
            free_endpoint(),
            "--trigger",
            trigger,
            "--emulator-images",
            str(camera_images),
            "--fps",
            "30",
            "--max-frames",
            "12",
            "--threshold",
            str(threshold),
            "--wait-subscribers",
            "0",
            "--jsonl",
            str(out),
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(verdicts) == 12 and [v["seq"] for v in verdicts] == list(range(12))
    assert all(v["camera"] == "basler1" and v["reason"] is None for v in verdicts)
    ids = [v["frame_id"] for v in verdicts]
    if trigger == "software":  # OneByOne: every triggered frame, in order, each the emulator's next image
        assert ids == list(range(12))
        assert [v["verdict"] for v in verdicts] == [expected[i % 6] for i in range(12)]
    else:  # LatestImageOnly: the newest frame each time; ids rise, some frames may be skipped
        assert ids == sorted(set(ids))
        assert [v["verdict"] for v in verdicts] == [expected[i % 6] for i in ids]


class EmulatorFaults(BaslerSource):
    """The emulated camera with faults injected at given reads: a failed buffer, the camera closing, and two the
    emulator cannot make, injected where pylon would report them: an over-trigger event (the emulator has no
    FrameStartOvertrigger event and drops extra triggers silently) and frames lost on the way (its BlockIDs never
    jump: our record of the last one is moved back instead)."""

    def __init__(self, *args, fail_at=(), lose_at=(), overtrigger_at=(), skip_at=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fail_at, self.lose_at, self.reads = set(fail_at), set(lose_at), 0
        self.overtrigger_at, self.skip_at = set(overtrigger_at), set(skip_at)

    def read(self, timeout: float = 1.0):
        if self.reads in self.fail_at:
            self._camera.ForceFailedBufferCount.SetValue(1)
            self._camera.ForceFailedBuffer.Execute()
        if self.reads in self.lose_at:
            self.lose_at.discard(self.reads)
            self._camera.Close()  # as if unplugged: the next grab fails
        if self.reads in self.overtrigger_at:
            self.overtrigger(123456)  # what the event handler calls on pylon's event thread
        if self.reads in self.skip_at:
            self._last_block_id -= 2  # as if the two frames before the next one had been lost
        self.reads += 1
        return super().read(timeout)


def test_incomplete_grabs_become_error_verdicts_with_contiguous_ids(onnx_engine: Path, camera_images: Path) -> None:
    settings = CameraSettings(64, 64, "rgb8", trigger="software", emulator_images=str(camera_images))
    source = EmulatorFaults("basler0", 0, None, settings, fail_at={3, 7})
    pipeline, messages = run_in_process(open_engine(onnx_engine), source, free_endpoint(), max_frames=10)
    verdicts = [p for k, p in messages if k == "verdict"]
    assert [v["frame_id"] for v in verdicts] == list(range(10))
    assert [v["reason"] for v in verdicts].count("grab_incomplete") == 2
    assert verdicts[3]["verdict"] == verdicts[7]["verdict"] == "error"
    assert pipeline.counters.frames == pipeline.counters.verdicts == 10


def test_ignored_triggers_and_lost_frames_become_error_verdicts(
    onnx_engine: Path, camera_images: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edge.sources.basler import NO_FRAME

    settings = CameraSettings(64, 64, "rgb8", trigger="software", emulator_images=str(camera_images))
    source = EmulatorFaults("basler0", 0, None, settings, overtrigger_at={2}, skip_at={6})
    with caplog.at_level("WARNING", logger="edge.sources.basler"):
        pipeline, messages = run_in_process(open_engine(onnx_engine), source, free_endpoint(), max_frames=12)
    assert not source.overtriggers_counted and "cannot report frame-trigger overruns" in caplog.text
    verdicts = [p for k, p in messages if k == "verdict"]
    assert len(verdicts) == 12 == pipeline.counters.frames == pipeline.counters.verdicts
    reasons = [v["reason"] for v in verdicts]
    assert reasons.count("trigger_overrun") == 1 and reasons.count("frame_lost") == 2
    assert verdicts[2]["frame_id"] == NO_FRAME and verdicts[2]["verdict"] == "error"
    # the two lost frames are named by the ids the camera skipped, and come just before the frame after them
    at = reasons.index("frame_lost")
    after = verdicts[at + 2]
    assert [v["frame_id"] for v in verdicts[at : at + 2]] == [after["frame_id"] - 2, after["frame_id"] - 1]
    assert after["verdict"] in ("pass", "fail")
    assert pipeline.counters.errors == {"trigger_overrun": 1, "frame_lost": 2}


class ExposureEndAsOvertrigger(BaslerSource):
    """The emulator has no FrameStartOvertrigger event but does send ExposureEnd events: wired the same way, they
    drive pylon's real event path (GrabCameraEvents, EventSelector, EventNotification, the registered handler)."""

    overtrigger_event = "ExposureEnd"
    overtrigger_nodes = ("EventExposureEndTimestamp", "ExposureEndEventTimestamp")


def test_camera_events_reach_the_source_through_pylon_and_each_becomes_an_error_frame(camera_images: Path) -> None:
    settings = CameraSettings(64, 64, "rgb8", trigger="software", emulator_images=str(camera_images))
    source = ExposureEndAsOvertrigger("basler0", 0, None, settings)
    source.open()
    try:
        assert source.overtriggers_counted
        frames = []
        deadline = time.monotonic() + 20
        while len([f for f in frames if f.pixels is not None]) < 6 and time.monotonic() < deadline:
            try:
                frames.append(source.read(timeout=1.0))  # each read triggers one exposure
            except TimeoutError:
                continue
    finally:
        source.close()
    images = [f for f in frames if f.pixels is not None]
    events = [f for f in frames if f.error == "trigger_overrun"]
    # one event per exposure (it comes before its image), each handed out as a part without a frame
    assert len(images) == 6 and len(events) >= 5
    assert all(f.frame_id == -1 and f.pixels is None for f in events)


def test_a_camera_lost_mid_stream_reconnects_and_every_frame_is_accounted(
    onnx_engine: Path, camera_images: Path
) -> None:
    settings = CameraSettings(64, 64, "rgb8", trigger="software", emulator_images=str(camera_images))
    source = EmulatorFaults("basler0", 0, None, settings, lose_at={5})
    pipeline, messages = run_in_process(open_engine(onnx_engine), source, free_endpoint(), max_frames=12)
    statuses = [p["health"] for k, p in messages if k == "status"]
    assert "camera_lost" in statuses and statuses[statuses.index("camera_lost") + 1] == "ok"
    verdicts = [p for k, p in messages if k == "verdict"]
    assert len(verdicts) == 12 == pipeline.counters.frames == pipeline.counters.verdicts
    assert pipeline.health == "ok" and all(v["verdict"] in ("pass", "fail") for v in verdicts)


def test_settings_the_camera_refuses_are_reported_in_its_words(camera_images: Path) -> None:
    from edge.sources import SourceError

    source = BaslerSource.from_uri("basler0", CameraSettings(64, 64, "rgb8", exposure_us=-5.0))
    with pytest.raises(SourceError, match="refused Exposure"):
        source.open()
    source.close()
    with pytest.raises(SourceError, match="no such Basler camera"):
        BaslerSource.from_uri("basler://does-not-exist", CameraSettings(64, 64)).open()


def test_no_camera_at_start_is_reported_and_never_passes(onnx_engine: Path) -> None:
    from edge.client import VerdictSubscriber

    endpoint = free_endpoint()
    subscriber = VerdictSubscriber(endpoint)
    process = subprocess.Popen(
        station(
            str(onnx_engine),
            "basler://0815-9999",
            endpoint,
            "--threshold",
            "0.5",
            "--wait-subscribers",
            "0",
            "--heartbeat-s",
            "0.2",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        kinds = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len([k for k in kinds if k[0] == "heartbeat"]) < 5:
            kinds += [(k, p.get("health")) for k, p in subscriber.poll(0.2)]
        assert ("status", "camera_lost") in kinds and ("heartbeat", "camera_lost") in kinds
        assert not any(k == "verdict" for k, _ in kinds)
    finally:
        subscriber.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert "no such Basler camera" in process.stderr.read()
