"""Fault injection: whatever goes wrong, every captured frame gets exactly one verdict, in order, or the run ends
non-zero with its final status saying why; nothing hangs past a bound. Real parts wherever they run here: the
real engine under the faulty outputs, real image folders, ZeroMQ between processes, a real full filesystem, a
real closed pipe, and ``edge-run`` itself (:mod:`tests.fault_parts` puts the faults in place)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import pytest

from edge.client import VerdictSubscriber
from edge.engines import Engine, open_engine
from edge.judge import Thresholds
from edge.pipeline import Pipeline, PipelineOptions
from edge.publish import VerdictPublisher
from edge.sources import FolderSource, Source
from tests.emulator import emulator_images
from tests.fault_parts import FaultyOutputs, FaultySource
from tests.test_runtime import SCHEMA, cli, free_endpoint

ROOT = Path(__file__).parents[1]
BOUND_S = 60  # no run here may take longer: past it, the line hung


def bounded_run(
    engine: Engine,
    source: Source,
    bound_s: float = BOUND_S,
    *,
    thresholds: Thresholds | None = None,
    recipes=None,
    recipe: str | None = None,
    on_start=None,
    **options,
) -> tuple[Pipeline, list[tuple[str, dict]]]:
    """Run ``source`` through the pipeline on another thread with a subscriber; fails if the run outlives
    ``bound_s``. Returns the pipeline and every message the subscriber received up to the final status.
    ``recipes`` and ``recipe``: the book and the recipe ``engine`` is; ``on_start(pipeline)`` is called as the
    run starts."""
    endpoint = free_endpoint()
    publisher = VerdictPublisher(endpoint, "faults")
    subscriber = VerdictSubscriber(endpoint)
    assert publisher.wait_subscribers(1, 10)
    source.open()
    engine.activate()
    options = PipelineOptions(station="faults", **options)
    thresholds = thresholds or Thresholds(0.5, 0.5, "t")
    pipeline = Pipeline(source, engine, publisher, thresholds, options, recipes=recipes, recipe=recipe)
    runner = threading.Thread(target=pipeline.run, daemon=True)
    try:
        runner.start()
        if on_start is not None:
            on_start(pipeline)
        runner.join(bound_s)
        assert not runner.is_alive(), f"the run hung: {pipeline.counters.to_dict()}"
        publisher.status({"state": "stopped", "final": True, "health": pipeline.health})
        return pipeline, until_final(subscriber)
    finally:
        pipeline.stop.set()
        subscriber.close()
        publisher.close(0)
        if not runner.is_alive():
            pipeline.release_recipes()
            engine.deactivate()
            source.close()


def until_final(subscriber: VerdictSubscriber, timeout_s: float = 10) -> list[tuple[str, dict]]:
    """The messages a subscriber receives up to and including the final status (or ``timeout_s`` of silence)."""
    messages = []
    for kind, payload in subscriber.messages(timeout_s=timeout_s):
        messages.append((kind, payload))
        if payload.get("final"):
            break
    return messages


def verdicts_of(messages: list[tuple[str, dict]]) -> list[dict]:
    return [payload for kind, payload in messages if kind == "verdict"]


def assert_one_verdict_per_frame(counters: dict, verdicts: list[dict]) -> None:
    """Frames in = verdicts out, every one received, in order, each valid against the schema."""
    assert counters["frames"] == counters["verdicts"] == len(verdicts) > 0
    assert [v["seq"] for v in verdicts] == list(range(len(verdicts)))
    for verdict in verdicts:
        jsonschema.validate(verdict, SCHEMA)


def faulty_station(spec: dict, engine: Path, camera: str, endpoint: str, *flags: str) -> list[str]:
    """The command line of ``edge-run`` with the faults of ``spec`` (:mod:`tests.fault_parts`)."""
    base = [sys.executable, "-m", "tests.fault_parts", json.dumps(spec)]
    return [*base, "--engine", str(engine), "--camera", camera, "--publish", endpoint, "--threshold", "0.5", *flags]


def run_with_subscriber(
    command: list[str], endpoint: str, bound_s: float = BOUND_S, **popen
) -> tuple[subprocess.Popen, list[tuple[str, dict]], str]:
    """Start ``command`` (a station publishing on ``endpoint`` that waits for one subscriber), receive until its
    final status, and wait for it to exit within ``bound_s``; returns the process, the messages and its stderr."""
    subscriber = VerdictSubscriber(endpoint)
    try:
        return run_for(command, subscriber, bound_s, **popen)
    finally:
        subscriber.close()


def run_for(
    command: list[str], subscriber: VerdictSubscriber, bound_s: float = BOUND_S, **popen
) -> tuple[subprocess.Popen, list[tuple[str, dict]], str]:
    """:func:`run_with_subscriber` with a subscriber of the caller's (one that stays from an earlier run)."""
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, **popen)
    try:
        messages = until_final(subscriber, timeout_s=bound_s)
        process.wait(timeout=bound_s)
        return process, messages, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def final_status(messages: list[tuple[str, dict]]) -> dict:
    finals = [payload for kind, payload in messages if kind == "status" and payload.get("final")]
    assert len(finals) == 1, "no final status was published"
    return finals[0]


# -- the four failure paths ---------------------------------------------------------------------------------------


def test_short_misshapen_and_mistyped_outputs_become_invalid_output_and_the_line_goes_on(
    onnx_engine: Path, part_folder: Path
) -> None:
    engine = FaultyOutputs(open_engine(onnx_engine), {1: "short", 2: "misshapen", 3: "dtype"})
    batches: list[int] = []
    inner = engine._infer
    engine._infer = lambda frames: (batches.append(len(frames)), inner(frames))[1]
    source = FolderSource(part_folder, "rgb8")
    pipeline, messages = bounded_run(engine, source, max_batch=4, batch_timeout_ms=200, queue_size=64)
    verdicts = verdicts_of(messages)
    assert_one_verdict_per_frame(pipeline.counters.to_dict(), verdicts)
    assert len(verdicts) == len(list(part_folder.glob("*.png")))
    invalid = [v for v in verdicts if v["reason"] == "invalid_output"]
    assert len(invalid) == sum(batches[1:4]) and batches[1] > 1  # a short batch has frames left without outputs
    assert all("its sidecar says" in v["detail"] for v in invalid)
    details = " ".join(v["detail"] for v in invalid)
    assert f"returned score ({batches[1] - 1},) float32 for a batch of {batches[1]}" in details
    assert "returned anomaly_map" in details and "float64" in details
    judged = [v for v in verdicts if v["verdict"] in ("pass", "fail")]
    assert len(judged) == len(verdicts) - len(invalid) - 2  # the broken file and the wrong size: errors of their own
    assert any(k == "status" and p["health"] == "engine_error" for k, p in messages)


def test_outputs_unlike_the_sidecar_at_the_first_call_are_refused_before_the_line_starts(
    onnx_engine: Path, part_folder: Path
) -> None:
    command = faulty_station({"engine": {"0": "misshapen"}}, onnx_engine, f"folder://{part_folder}", free_endpoint())
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=BOUND_S)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "returned anomaly_map (4, 1, 63, 64) float32" in lines[0] and "its sidecar says" in lines[0]
    )


def test_a_closed_stdout_for_json_lines_ends_the_run_non_zero_with_every_frame_judged(
    onnx_engine: Path, part_folder: Path
) -> None:
    endpoint = free_endpoint()
    command = [*cli("run_main"), "--engine", str(onnx_engine), "--camera", f"folder://{part_folder}?loop=1&fps=20"]
    command += ["--publish", endpoint, "--threshold", "0.5", "--wait-subscribers", "1", "--jsonl", "-"]
    subscriber = VerdictSubscriber(endpoint)
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        written = [process.stdout.readline() for _ in range(5)]
        process.stdout.close()  # the reader of the JSON lines goes away: a real closed pipe
        messages = until_final(subscriber, timeout_s=BOUND_S)
        assert process.wait(timeout=BOUND_S) == 1
        stderr = process.stderr.read()
    finally:
        subscriber.close()
        if process.poll() is None:
            process.kill()
    assert all(json.loads(line)["kind"] == "verdict" for line in written)
    final = final_status(messages)
    assert final["reason"].startswith("sink_error: jsonl sink: BrokenPipeError") and final["health"] == "degraded"
    verdicts = verdicts_of(messages)
    assert_one_verdict_per_frame(final["counters"], verdicts)
    first = next(i for i, v in enumerate(verdicts) if v["reason"] == "sink_error")  # the pipe held some lines
    assert first >= len(written) and all(v["reason"] == "sink_error" for v in verdicts[first:])  # none unrecorded
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert "the station stopped on a failure: sink_error: jsonl sink: BrokenPipeError" in stderr


@pytest.fixture
def full_disk(tmp_path: Path) -> tuple[Path, dict]:
    """A place whose disk fills after about 16 kB, and the ``Popen`` arguments a station writing there needs: a real
    16 kB tmpfs where mounting is allowed (root), else the same limit as RLIMIT_FSIZE on the station's process."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode == 0:
        try:
            yield mount, {}
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)
        return
    import resource

    yield mount, {"preexec_fn": lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))}


def test_json_lines_on_a_full_disk_end_the_run_non_zero_with_the_final_status(
    onnx_engine: Path, part_folder: Path, full_disk: tuple[Path, dict]
) -> None:
    folder, popen = full_disk
    endpoint = free_endpoint()
    flags = ("--wait-subscribers", "1", "--jsonl", str(folder / "verdicts.jsonl"))
    command = faulty_station({}, onnx_engine, f"folder://{part_folder}?loop=1&fps=50", endpoint, *flags)
    process, messages, stderr = run_with_subscriber(command, endpoint, **popen)
    assert process.returncode == 1, stderr
    final = final_status(messages)
    no_room = "[Errno 27] File too large" if popen else "[Errno 28] No space left on device"
    assert final["reason"].startswith(f"sink_error: jsonl sink: OSError: {no_room}"), final["reason"]
    verdicts = verdicts_of(messages)
    assert_one_verdict_per_frame(final["counters"], verdicts)
    recorded = (folder / "verdicts.jsonl").read_text().splitlines()
    assert 10 < len(recorded) < len(verdicts)
    assert verdicts[-1]["reason"] == "sink_error" and "Traceback" not in stderr


def test_an_unexpected_capture_exception_ends_the_run_non_zero_after_judging_every_frame(
    onnx_engine: Path, part_folder: Path
) -> None:
    endpoint = free_endpoint()
    spec = {"source": {"6": "raise"}}
    command = faulty_station(
        spec, onnx_engine, f"folder://{part_folder}?loop=1&fps=20", endpoint, "--wait-subscribers", "1"
    )
    process, messages, stderr = run_with_subscriber(command, endpoint)
    assert process.returncode == 1, stderr  # systemd's Restart=on-failure restarts it
    final = final_status(messages)
    assert final["reason"] == "capture_failed: RuntimeError: injected: GenICam node access outside the wrapped calls"
    verdicts = verdicts_of(messages)
    assert_one_verdict_per_frame(final["counters"], verdicts)
    assert len(verdicts) == 6 and "Traceback" not in stderr


def test_a_frame_that_breaks_the_capture_stage_after_it_was_counted_still_gets_its_verdict(
    onnx_engine: Path, part_folder: Path
) -> None:
    source = FaultySource(FolderSource(part_folder, "rgb8"), {3: "malformed"})
    pipeline, messages = bounded_run(open_engine(onnx_engine), source)  # no deadline: only the count can end it
    verdicts = verdicts_of(messages)
    assert_one_verdict_per_frame(pipeline.counters.to_dict(), verdicts)
    assert len(verdicts) == len(list(part_folder.glob("*.png")))
    assert verdicts[3]["reason"] == "capture_failed" and "AttributeError" in verdicts[3]["detail"]
    assert verdicts[4]["verdict"] in ("pass", "fail") and pipeline.failure is None


def notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    return sock


def test_a_stuck_stage_stops_feeding_the_watchdog_then_ends_the_run_non_zero(
    onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    endpoint = free_endpoint()
    flags = ("--wait-subscribers", "1", "--stall-s", "1", "--heartbeat-s", "0.2")
    command = faulty_station(
        {"source": {"4": "stall"}}, onnx_engine, f"folder://{part_folder}?loop=1&fps=20", endpoint, *flags
    )
    sock = notify_socket(tmp_path / "notify.sock")
    heard: list[tuple[float, str]] = []
    listener = threading.Thread(target=lambda: heard.extend(notifications_until_stopping(sock)), daemon=True)
    listener.start()
    try:
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
        started = time.monotonic()
        process, messages, stderr = run_with_subscriber(command, endpoint, env=env)
        took = time.monotonic() - started
        listener.join(5)
    finally:
        sock.close()
    assert process.returncode == 1, stderr
    final = final_status(messages)
    assert final["reason"].startswith("capture_failed: stuck: a read from the source has not returned")
    statuses = [p for k, p in messages if k == "status" and not p.get("final")]
    assert any(s["health"] == "degraded" and "has not returned" in s.get("reason", "") for s in statuses)
    assert_one_verdict_per_frame(final["counters"], verdicts_of(messages))
    fed = [t for t, m in heard if m == "WATCHDOG=1"]
    stopping = next(t for t, m in heard if m == "STOPPING=1")
    assert fed and stopping - fed[-1] > 1.0  # fed while moving, not for the stall limit before it gave up
    assert took < 30


def notifications_until_stopping(sock: socket.socket) -> list[tuple[float, str]]:
    """What systemd would have heard up to ``STOPPING=1``, with when it came (monotonic seconds)."""
    heard = []
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        try:
            heard.append((time.monotonic(), sock.recv(4096).decode()))
        except TimeoutError:
            continue
        except OSError:
            break
        if heard[-1][1] == "STOPPING=1":
            break
    return heard


# -- the rest of the fault suite ----------------------------------------------------------------------------------


def test_raising_nan_and_slow_engine_calls_become_error_verdicts_past_their_deadline(
    onnx_engine: Path, part_folder: Path
) -> None:
    engine = FaultyOutputs(open_engine(onnx_engine), {1: "raise", 2: "nan", 3: "slow"}, slow_s=1.0)
    source = FolderSource(part_folder, "rgb8", fps=5)  # a camera: frames keep coming while call 3 is slow
    pipeline, messages = bounded_run(engine, source, max_batch=1, max_frames=10, verdict_deadline_ms=600)
    verdicts = verdicts_of(messages)
    assert_one_verdict_per_frame(pipeline.counters.to_dict(), verdicts)
    reasons = [v["reason"] for v in verdicts]
    assert reasons[1:4] == ["engine_error", "invalid_output", "deadline"] and len(verdicts) == 10
    assert "injected engine failure" in verdicts[1]["detail"] and verdicts[2]["score"] is None
    assert reasons.count("deadline") == pipeline.late_results  # each result came after all, and was dropped
    assert pipeline.failure is None


def test_a_hanging_engine_ends_the_run_non_zero_with_an_error_for_every_frame_it_holds(
    onnx_engine: Path, part_folder: Path
) -> None:
    engine = FaultyOutputs(open_engine(onnx_engine), {3: "hang"})
    source = FolderSource(part_folder, "rgb8", loop=True, fps=20)
    try:
        started = time.monotonic()
        pipeline, messages = bounded_run(engine, source, max_batch=1, stall_s=0.5, heartbeat_s=0.1)
        took = time.monotonic() - started
    finally:
        engine.release.set()
    verdicts = verdicts_of(messages)
    assert_one_verdict_per_frame(pipeline.counters.to_dict(), verdicts)
    assert pipeline.failure.startswith("engine_error: stuck: inference running for")
    assert verdicts[3]["reason"] == "engine_error" and "abandoned" in verdicts[3]["detail"]
    assert all(v["verdict"] == "error" for v in verdicts[3:])  # nothing judged once the engine hung
    assert any(k == "status" and "inference running" in p.get("reason", "") for k, p in messages)
    assert took < 10  # stuck for the stall limit twice, then ended


def test_duplicate_and_backwards_frame_ids_each_get_one_verdict_in_capture_order(
    onnx_engine: Path, part_folder: Path
) -> None:
    source = FaultySource(FolderSource(part_folder, "rgb8"), {6: "duplicate", 12: "backwards"})
    pipeline, messages = bounded_run(open_engine(onnx_engine), source)
    verdicts = verdicts_of(messages)
    assert_one_verdict_per_frame(pipeline.counters.to_dict(), verdicts)
    ids = [v["frame_id"] for v in verdicts]
    assert ids[5:7] == [5, 5] and ids[12] == 7  # the source's ids as it gave them; seq is the capture order
    assert len(verdicts) == len(list(part_folder.glob("*.png")))


def test_the_emulated_camera_removed_mid_run_is_reported_lost_then_back_and_every_frame_is_judged(
    onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    pytest.importorskip("pypylon.pylon", reason="pypylon is not installed (pip install pypylon)")
    from edge.sources.basler import BaslerSource, CameraSettings

    class Removed(BaslerSource):
        """pylon's emulator, its device destroyed under the grab at read 5 (as an unplugged camera leaves it)."""

        reads = 0

        def read(self, timeout: float = 1.0):
            self.reads += 1
            if self.reads == 5:
                self._camera.DestroyDevice()
            return super().read(timeout)

    images = emulator_images(part_folder, tmp_path)
    settings = CameraSettings(64, 64, "rgb8", trigger="software", fps=20, emulator_images=str(images))
    source = Removed("basler0", 0, None, settings)
    pipeline, messages = bounded_run(open_engine(onnx_engine), source, max_frames=12, heartbeat_s=0.2)
    verdicts = verdicts_of(messages)
    assert_one_verdict_per_frame(pipeline.counters.to_dict(), verdicts)
    health = [p["health"] for k, p in messages if k == "status"]
    assert "camera_lost" in health and health[-1] == "ok" and source.reads > 12
    assert len(verdicts) == 12 and all(v["verdict"] in ("pass", "fail") for v in verdicts)


def test_subscribers_that_come_go_and_come_back_never_slow_the_line(onnx_engine: Path, part_folder: Path) -> None:
    endpoint = free_endpoint()
    flags = ("--wait-subscribers", "1", "--max-frames", "120", "--heartbeat-s", "0.2")
    command = faulty_station({}, onnx_engine, f"folder://{part_folder}?loop=1&fps=40", endpoint, *flags)
    first = VerdictSubscriber(endpoint)
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        seen: list[int] = []
        while len(seen) < 20:
            seen += [p["seq"] for k, p in first.poll(0.2) if k == "verdict"]
        first.close()  # gone without a word
        time.sleep(0.5)
        churn = [VerdictSubscriber(endpoint) for _ in range(5)]  # come and go while the line runs
        for subscriber in churn:
            subscriber.poll(0.05)
            subscriber.close()
        back = VerdictSubscriber(endpoint)
        messages = until_final(back, timeout_s=BOUND_S)
        back.close()
        assert process.wait(timeout=BOUND_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
    final = final_status(messages)
    assert final["counters"]["frames"] == final["counters"]["verdicts"] == 120
    later = [p["seq"] for k, p in messages if k == "verdict"]
    assert later and later == list(range(later[0], 120)) and later[0] > seen[-1]  # from its join, no gap
    # never waited for them: 120 frames at 40/s take 3 s, allow the machine's load twice over
    assert final["counters"]["seconds"] < 9


def test_sigterm_mid_batch_drains_the_batch_and_exits_0(onnx_engine: Path, part_folder: Path) -> None:
    endpoint = free_endpoint()
    spec = {"engine": {"4": "slow"}, "slow_s": 1.5}  # call 0 is the warm-up: the fourth frame's batch is slow
    command = faulty_station(spec, onnx_engine, f"folder://{part_folder}?loop=1&fps=10", endpoint, "--max-batch", "1")
    subscriber = VerdictSubscriber(endpoint)
    process = subprocess.Popen([*command, "--wait-subscribers", "1"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    messages = []
    try:
        for kind, payload in subscriber.messages(timeout_s=BOUND_S):
            messages.append((kind, payload))
            if kind == "verdict" and payload["seq"] == 2:
                time.sleep(0.3)  # the slow batch has started
                process.send_signal(signal.SIGTERM)
            if payload.get("final"):
                break
        assert process.wait(timeout=BOUND_S) == 0
    finally:
        subscriber.close()
        if process.poll() is None:
            process.kill()
    final = final_status(messages)
    verdicts = verdicts_of(messages)
    assert_one_verdict_per_frame(final["counters"], verdicts)
    assert verdicts[3]["verdict"] in ("pass", "fail") and verdicts[3]["latency_ms"]["infer"] > 1000


def test_sigterm_with_a_hanging_engine_ends_within_the_stall_limit(onnx_engine: Path, part_folder: Path) -> None:
    endpoint = free_endpoint()
    flags = ("--max-batch", "1", "--stall-s", "2", "--heartbeat-s", "0.2", "--wait-subscribers", "1")
    command = faulty_station(
        {"engine": {"4": "hang"}}, onnx_engine, f"folder://{part_folder}?loop=1&fps=10", endpoint, *flags
    )
    subscriber = VerdictSubscriber(endpoint)
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    messages, stopped = [], None
    try:
        for kind, payload in subscriber.messages(timeout_s=BOUND_S):
            messages.append((kind, payload))
            if kind == "verdict" and payload["seq"] == 2 and stopped is None:
                time.sleep(0.3)
                process.send_signal(signal.SIGTERM)
                stopped = time.monotonic()
            if payload.get("final"):
                break
        assert process.wait(timeout=BOUND_S) == 1
        took = time.monotonic() - stopped
    finally:
        subscriber.close()
        if process.poll() is None:
            process.kill()
    final = final_status(messages)
    assert final["reason"].startswith("engine_error: stuck: inference running")
    verdicts = verdicts_of(messages)
    assert_one_verdict_per_frame(final["counters"], verdicts)
    assert verdicts[3]["reason"] == "engine_error" and took < 2 + 3  # the stall limit, and a heartbeat or two


def test_sigkill_mid_batch_then_a_restart_gives_a_new_run_and_publishes_nothing_twice(
    onnx_engine: Path, part_folder: Path
) -> None:
    endpoint = free_endpoint()
    spec = {"engine": {"4": "slow"}, "slow_s": 5}
    flags = ("--max-batch", "1", "--wait-subscribers", "1")
    subscriber = VerdictSubscriber(endpoint)
    killed = subprocess.Popen(
        faulty_station(spec, onnx_engine, f"folder://{part_folder}?loop=1&fps=10", endpoint, *flags), cwd=ROOT
    )
    messages = []
    try:
        for kind, payload in subscriber.messages(timeout_s=BOUND_S):
            messages.append((kind, payload))
            if kind == "verdict" and payload["seq"] == 2:
                time.sleep(0.3)  # mid-batch: the slow call has started
                killed.kill()
                break
        killed.wait(timeout=BOUND_S)
        restarted = faulty_station({}, onnx_engine, f"folder://{part_folder}", endpoint, *flags)
        process, after, stderr = run_for(restarted, subscriber)
    finally:
        subscriber.close()
        if killed.poll() is None:
            killed.kill()
    assert process.returncode == 0, stderr
    first_run = {p["run_id"] for k, p in messages if k == "verdict"}
    second = [p for k, p in after if k == "verdict"]
    assert len(first_run) == 1 and {p["run_id"] for p in second} - first_run == {p["run_id"] for p in second}
    published = [(p["run_id"], p["seq"]) for k, p in messages + after if k == "verdict"]
    assert len(published) == len(set(published))  # nothing twice
    assert [p["seq"] for p in second] == list(range(len(list(part_folder.glob("*.png")))))
    assert subscriber.state.run_id == second[0]["run_id"]
