"""Product changeover without stopping the line: recipes switched between two frames while pylon's emulated camera
streams at a steady trigger rate, and every refusal leaving the running recipe untouched. Real parts: the real
engines (two different artefacts), the emulator, ZeroMQ, and ``edge-run`` with ``edge-control`` in processes."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edge.config import ConfigError, StationConfig
from edge.engines import open_engine
from edge.recipes import RecipeBook, RecipeError
from edge.sidecar import FrameSpec
from tests.colour_model import write_colour_model
from tests.emulator import emulator_images
from tests.test_faults import assert_one_verdict_per_frame, bounded_run, verdicts_of
from tests.test_runtime import cli, free_endpoint

FPS = 25.0  # the emulator's software trigger rate in the switching test


@pytest.fixture(scope="module")
def recipes(onnx_engine: Path, brick_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Recipes A (the test engine), B (another model of the same frames), small (32×32 frames), damaged (A's
    artefact cut short under its own sidecar) and a file that is not TOML."""
    folder = tmp_path_factory.mktemp("recipes")
    for suffix in ("", ".json"):
        shutil.copy(f"{onnx_engine}{suffix}", folder / f"a.onnx{suffix}")
    good = tmp_path_factory.mktemp("good-b")
    for path in sorted((brick_dataset / "train" / "good").glob("*.png"))[:6]:  # fitted on fewer images: another model
        shutil.copy(path, good / path.name)
    write_colour_model(good, folder / "b.onnx", FrameSpec(64, 64, "rgb8", max_batch=4))
    write_colour_model(good, folder / "small.onnx", FrameSpec(32, 32, "rgb8", max_batch=1), size=32)
    data = (folder / "a.onnx").read_bytes()
    (folder / "damaged.onnx").write_bytes(data[: len(data) // 2])
    shutil.copy(folder / "a.onnx.json", folder / "damaged.onnx.json")
    for number, (name, engine) in enumerate(
        (("A", "a.onnx"), ("B", "b.onnx"), ("small", "small.onnx"), ("damaged", "damaged.onnx")), 1
    ):
        (folder / f"{name}.toml").write_text(
            f'engine = "{engine}"\nnumber = {number}\nthreshold = 0.5\npixel_threshold = 0.5\n'
        )
    (folder / "broken.toml").write_text("engine = \n")
    return folder


def emulated_camera(part_folder: Path, tmp_path: Path, fps: float = FPS):
    """pylon's emulated camera streaming four of the parts, triggered by software at ``fps``."""
    pytest.importorskip("pypylon.pylon", reason="pypylon is not installed (pip install pypylon)")
    from edge.sources.basler import BaslerSource, CameraSettings

    images = emulator_images(part_folder, tmp_path)
    settings = CameraSettings(64, 64, "rgb8", trigger="software", fps=fps, emulator_images=str(images))
    return BaslerSource("basler0", 0, None, settings)


def recipe_switches(messages: list[tuple[str, dict]]) -> list[tuple[int, str, str]]:
    """``(from_frame, recipe, model)`` of every switch the status topic announced."""
    return [
        (p["recipe"]["from_frame"], p["recipe"]["name"], p["recipe"]["model"])
        for k, p in messages
        if k == "status" and "recipe" in p
    ]


def test_a_hundred_switches_during_a_stream_judge_every_frame_by_the_recipe_in_force_at_its_capture(
    recipes: Path, part_folder: Path, tmp_path: Path
) -> None:
    book = RecipeBook(recipes)
    first = book.open("A")
    engine, thresholds = first[0], first[1]
    answers, refusals = [], []

    def operator(pipeline) -> None:
        """Alternate B and A a hundred times, one switch every 2 or 3 frames; refusals in between."""
        for i in range(100):
            while pipeline.counters.frames < 10 + int(i * 2.5):
                time.sleep(0.005)
            answers.append(pipeline.control({"command": "set_recipe", "name": "BA"[i % 2]}, "test"))
            while pipeline.recipe.name != "BA"[i % 2]:  # in force from the next frame read
                time.sleep(0.002)
            if i % 25 == 12:  # refused: the running recipe must not move
                for name in ("nonexistent", "small", "damaged", "broken"):
                    refusals.append(
                        (
                            pipeline.recipe.name,
                            pipeline.control({"command": "set_recipe", "name": name}, "test"),
                            pipeline.recipe.name,
                        )
                    )
        pipeline.stop.set()

    threads = []

    def start(pipeline) -> None:
        threads.append(threading.Thread(target=operator, args=(pipeline,), daemon=True))
        threads[0].start()

    source = emulated_camera(part_folder, tmp_path)
    pipeline, messages = bounded_run(
        engine, source, bound_s=120, heartbeat_s=0.2, recipes=book, recipe="A", on_start=start, thresholds=thresholds
    )
    threads[0].join(10)
    verdicts = verdicts_of(messages)
    assert_one_verdict_per_frame(pipeline.counters.to_dict(), verdicts)
    assert len(answers) == 100 and all(a["ok"] for a in answers), [a for a in answers if not a["ok"]]
    switches = recipe_switches(messages)
    assert len(switches) == 100 and [name for _, name, _ in switches] == list("BA" * 50)
    assert {name: model for _, name, model in switches} == {
        "A": f"sha256:{open_engine(recipes / 'a.onnx').sidecar.sha256}",
        "B": f"sha256:{open_engine(recipes / 'b.onnx').sidecar.sha256}",
    }
    # every verdict names the recipe and model in force when its frame was captured, by frame id
    expected, model = "A", switches[-1][2] if switches[-1][1] == "A" else switches[-2][2]
    points = iter(switches)
    upcoming = next(points, None)
    for verdict in verdicts:
        while upcoming is not None and verdict["frame_id"] >= upcoming[0]:
            _, expected, model = upcoming
            upcoming = next(points, None)
        assert (verdict["recipe"], verdict["model"]) == (expected, model), verdict["frame_id"]
        assert verdict["verdict"] in ("pass", "fail") or verdict["reason"] == "overrun", verdict
    # loading the next engine beside the line costs it (almost) nothing: overruns are rare on a busy 2-core CPU
    assert sum(v["verdict"] == "error" for v in verdicts) <= len(verdicts) // 20
    # no switch held capture up: the trigger kept its period across every switch point
    period_ns = 1e9 / FPS
    captured = {v["frame_id"]: v["t_capture_ns"] for v in verdicts}
    stalls = [captured[f] - captured[f - 1] - period_ns for f, _, _ in switches if f - 1 in captured]
    assert len(stalls) >= 90 and max(stalls) < period_ns, max(stalls) / 1e6
    # each refusal answered with its reason, the running recipe unchanged
    assert len(refusals) == 16
    for before, answer, after in refusals:
        assert not answer["ok"] and before == after and "\n" not in answer["error"]
    reasons = [answer["error"] for _, answer, _ in refusals[:4]]
    assert "unknown recipe 'nonexistent'" in reasons[0] and "known: A, B, broken, damaged, small" in reasons[0]
    assert "takes 32x32 rgb8 frames, the camera gives 64x64 rgb8" in reasons[1]
    assert "recipe damaged:" in reasons[2] and "recipe broken:" in reasons[3]


def test_a_switch_at_a_part_boundary_starts_at_that_frame_id(recipes: Path, part_folder: Path, tmp_path: Path) -> None:
    book = RecipeBook(recipes)
    engine, thresholds, _ = book.open("A")
    boundary = {}

    def arm(pipeline) -> None:
        def later() -> None:
            while pipeline.counters.frames < 5:
                time.sleep(0.01)
            boundary["at"] = pipeline.counters.frames + 15  # frame ids count from the first grab
            boundary["answer"] = pipeline.control(
                {"command": "set_recipe", "name": "B", "at_frame": boundary["at"]}, "plc"
            )

        threading.Thread(target=later, daemon=True).start()

    source = emulated_camera(part_folder, tmp_path, fps=50)
    pipeline, messages = bounded_run(
        engine, source, max_frames=50, recipes=book, recipe="A", on_start=arm, thresholds=thresholds
    )
    verdicts = verdicts_of(messages)
    assert_one_verdict_per_frame(pipeline.counters.to_dict(), verdicts)
    assert boundary["answer"]["ok"] and boundary["answer"]["at_frame"] == boundary["at"]
    assert recipe_switches(messages)[0][:2] == (boundary["at"], "B")
    assert all((v["recipe"] == "B") == (v["frame_id"] >= boundary["at"]) for v in verdicts)


def test_cameras_on_the_same_artefact_share_one_engine_released_when_no_recipe_uses_it(
    recipes: Path, tmp_path: Path
) -> None:
    book = RecipeBook(recipes)
    engine, thresholds, _ = book.open("A")
    engine.activate()
    book.adopt(engine, 2)  # a station of two cameras, both starting on A
    cam1, cam2 = (book.starting("A", engine, thresholds) for _ in range(2))
    assert cam1.number == 1 and cam1.describe()["number"] == 1
    frame = engine.frame
    b1, b2 = book.load("B", frame), book.load("B", frame)  # each camera switches to B: one engine for both
    assert b1.engine is b2.engine and b1.engine.active and b1.thresholds is not b2.thresholds
    cam1.release()  # camera 1 no longer on A: camera 2 still is
    assert engine.active
    cam2.release()
    assert not engine.active
    b1.release()
    assert b2.engine.active
    b2.release()
    assert not b2.engine.active
    again = book.load("B", frame)  # opened afresh once none was left
    assert again.engine is not b1.engine and again.engine.active
    again.release()
    assert book.name_of(2) == "B"
    for number, problem in ((9, "no recipe has number = 9"), (1, "recipes A and twin both have number = 1")):
        if number == 1:
            (recipes / "twin.toml").write_text('engine = "a.onnx"\nnumber = 1\n')
        try:
            with pytest.raises(RecipeError, match=problem):
                book.name_of(number)
        finally:
            (recipes / "twin.toml").unlink(missing_ok=True)
    (tmp_path / "odd.toml").write_text('engine = "a.onnx"\nnumber = 0\n')
    with pytest.raises(RecipeError, match="number must be an integer 1…65535"):
        RecipeBook(tmp_path).read("odd")


def test_the_bridge_shows_the_recipe_in_force_from_heartbeats_and_status() -> None:
    from edge.bridge.station import Received, StationView

    view = StationView("line")
    recipe = {"name": "B", "model": "sha256:" + "0" * 64, "engine": "b.onnx"}
    view.apply(Received("heartbeat", {"run_id": "r", "health": "ok", "counters": None, "recipe": recipe}))
    assert view.recipe == "B"
    view.apply(Received("status", {"run_id": "r", "health": "ok", "recipe": {**recipe, "name": "A", "from_frame": 7}}))
    assert view.recipe == "A"
    view.apply(Received("heartbeat", {"run_id": "r", "health": "ok", "recipe": {**recipe, "name": None}}))
    assert view.recipe == ""


def test_recipe_files_and_settings_are_checked_with_one_line_each(recipes: Path, tmp_path: Path) -> None:
    book = RecipeBook(recipes)
    assert book.names() == ["A", "B", "broken", "damaged", "small"]
    (tmp_path / "odd.toml").write_text('engine = "a.onnx"\nspeed = 3\n[camera]\nexposure_us = "fast"\n')
    with pytest.raises(RecipeError, match="unknown keys speed"):
        RecipeBook(tmp_path).read("odd")
    with pytest.raises(RecipeError, match="does not exist"):
        RecipeBook(tmp_path / "absent")
    with pytest.raises(ConfigError, match="without --engine"):
        StationConfig.load(None, {"recipes": str(recipes), "recipe": "A", "engine": "x.onnx", "camera": "basler0"})
    with pytest.raises(ConfigError, match="needs --recipe NAME"):
        StationConfig.load(None, {"recipes": str(recipes), "camera": "basler0"})
    with pytest.raises(ConfigError, match="needs --recipes DIR"):
        StationConfig.load(None, {"recipe": "A", "engine": "x.onnx", "camera": "basler0"})
    assert StationConfig.load(None, {"recipes": str(recipes), "recipe": "A", "camera": "basler0"}).engine == ""


def test_edge_run_with_recipes_switches_on_edge_control_and_refuses_an_unknown_one(
    recipes: Path, part_folder: Path, tmp_path: Path
) -> None:
    from edge.client import VerdictSubscriber

    endpoint, control = free_endpoint(), free_endpoint().replace("*", "127.0.0.1")
    folder = tmp_path / "parts"
    folder.mkdir()
    for path in sorted(part_folder.glob("0*.png"))[:8]:
        shutil.copy(path, folder / path.name)
    command = [
        *cli("run_main"), "--recipes", str(recipes), "--recipe", "A", "--camera", f"folder://{folder}?loop=1&fps=25",
        "--publish", endpoint, "--control", control, "--max-frames", "120",
    ]  # fmt: skip
    subscriber = VerdictSubscriber(endpoint)
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        messages, asked = [], []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for kind, payload in subscriber.poll(0.2):
                messages.append((kind, payload))
            count = len(verdicts_of(messages))
            if count >= 20 and not asked:
                asked.append(
                    subprocess.run(
                        [*cli("control_main"), control, "set-recipe", "nope"], capture_output=True, text=True
                    )
                )
                asked.append(
                    subprocess.run([*cli("control_main"), control, "set-recipe", "B"], capture_output=True, text=True)
                )
            if any(k == "status" and p.get("final") for k, p in messages):
                break
        assert process.wait(timeout=30) == 0, process.stderr.read()
    finally:
        subscriber.close()
        if process.poll() is None:
            process.kill()
    refused, switched = asked
    assert refused.returncode == 1 and "unknown recipe 'nope'" in refused.stdout
    assert switched.returncode == 0 and '"name": "B"' in switched.stdout
    verdicts = verdicts_of(messages)
    assert len(verdicts) == 120 and [v["seq"] for v in verdicts] == list(range(120))
    start = recipe_switches(messages)[0][0]
    assert all(v["recipe"] == ("B" if v["frame_id"] >= start else "A") for v in verdicts)
    assert {v["recipe"] for v in verdicts} == {"A", "B"}


def test_an_opcua_client_and_a_modbus_plc_switch_the_recipe_through_the_bridge(
    recipes: Path, part_folder: Path, tmp_path: Path
) -> None:
    pytest.importorskip("asyncua", reason="the bridge extra is not installed")
    import asyncio

    from edge.bridge.modbus import ACTIVE_RECIPE, RECIPE_ARMED, RECIPE_REFUSED
    from edge.bridge.probe import ModbusPlc, OpcuaProbe
    from tests.test_bridge import bridge, free_port

    ports = [free_port() for _ in range(4)]
    endpoint, control = f"tcp://127.0.0.1:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}"
    url = f"opc.tcp://127.0.0.1:{ports[2]}/edge/"
    folder = tmp_path / "parts"
    folder.mkdir()
    for path in sorted(part_folder.glob("0*.png"))[:8]:
        shutil.copy(path, folder / path.name)
    station = subprocess.Popen(
        [
            *cli("run_main"),
            "--recipes",
            str(recipes),
            "--recipe",
            "A",
            "--camera",
            f"folder://{folder}?loop=1&fps=20",
            "--publish",
            endpoint,
            "--control",
            control,
            "--station",
            "line",
            "--wait-subscribers",
            "0",
        ],  # fmt: skip
        stderr=subprocess.DEVNULL,
    )
    args = ["--station", f"line={endpoint}", "--control", f"line={control}", "--opcua", url]
    args += ["--modbus", f"127.0.0.1:{ports[3]}"]
    try:
        with bridge(*args, wait_for=(ports[2], ports[3])):

            async def operate() -> tuple:
                probe = OpcuaProbe(url, "line")
                await probe.start()
                refused = await probe.set_recipe("nope")
                switched = await probe.set_recipe("B")
                deadline = time.monotonic() + 20
                while (await probe.read())["Recipe"] != "B" and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                shown = (await probe.read())["Recipe"]
                plc = ModbusPlc("127.0.0.1", ports[3])  # the PLC's handshake: back to A (number 1), then 9
                await plc.connect()
                by_plc = [await plc.set_recipe(1), await plc.set_recipe(9)]
                while (await plc.registers())[ACTIVE_RECIPE] != 1 and time.monotonic() < deadline + 20:
                    await asyncio.sleep(0.1)
                by_plc.append((await plc.registers())[ACTIVE_RECIPE])
                shown_after = (await probe.read())["Recipe"]
                await plc.close()
                await probe.stop()
                return refused, switched, shown, by_plc, shown_after

            refused, switched, shown, by_plc, shown_after = asyncio.run(operate())
    finally:
        station.terminate()
        station.wait(timeout=20)
    assert refused[0] is False and "unknown recipe 'nope'" in refused[1]
    assert switched[0] is True and "recipe B armed" in switched[1]
    assert shown == "B"  # the heartbeats after the switch carry it
    assert by_plc[0][0] == RECIPE_ARMED and by_plc[1][0] == RECIPE_REFUSED  # number 9: no such recipe
    assert by_plc[2] == 1 and shown_after == "A"


def test_cameras_of_one_station_start_on_their_own_recipes_and_switch_on_their_own(
    recipes: Path, part_folder: Path, tmp_path: Path
) -> None:
    pytest.importorskip("pypylon.pylon", reason="pypylon is not installed (pip install pypylon)")
    import json
    import os

    images = emulator_images(part_folder, tmp_path)
    out = tmp_path / "v.jsonl"
    command = [
        *cli("run_main"), "--recipes", str(recipes), "--recipe", "A", "--recipe", "B", "--camera", "basler0",
        "--camera", "basler1", "--trigger", "software", "--fps", "10", "--emulator-images", str(images),
        "--max-frames", "12", "--publish", free_endpoint(), "--jsonl", str(out),
    ]  # fmt: skip
    emulator = {**os.environ, "PYLON_CAMEMU": "2"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=emulator)
    assert result.returncode == 0, result.stderr
    models = {name: f"sha256:{open_engine(recipes / f'{name.lower()}.onnx').sidecar.sha256}" for name in "AB"}
    for camera, recipe in (("cam1", "A"), ("cam2", "B")):
        verdicts = [json.loads(line) for line in (tmp_path / f"v-{camera}.jsonl").read_text().splitlines()]
        assert len(verdicts) == 12 and {(v["recipe"], v["model"]) for v in verdicts} == {(recipe, models[recipe])}
    three = subprocess.run(
        [*command[: command.index("--camera")], "--camera", "basler0", "--camera", "basler1", "--camera", "basler0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert three.returncode == 2 and "2 recipes for 3 cameras" in three.stderr
