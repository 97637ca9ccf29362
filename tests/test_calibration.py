"""Calibration: thresholds that hold on held-out good images, honest refusals, an atomic sidecar update with
history, a report that renders, and drift detection on the line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import stats

import calibration.run as calibration_run
from calibration.run import CalibrationError, calibrate
from edge.drift import DriftMonitor
from edge.engines import open_engine
from edge.false_rejects import clopper_pearson_upper, false_reject_threshold, minimum_good
from edge.judge import ThresholdError, Thresholds
from edge.sidecar import read_sidecar, sidecar_path


def test_tail_fit_meets_the_target_on_a_known_distribution() -> None:
    """Good scores from known distributions: the true false-reject rate at the chosen threshold lies in the
    stated interval in most of 15 independent calibrations each (a 95 % interval may miss now and then), and
    sits near the target."""
    rng = np.random.default_rng(0)
    for distribution in (stats.beta(2, 30), stats.beta(2, 10)):
        inside, ratios = 0, []
        for _ in range(15):
            result = false_reject_threshold(distribution.rvs(300, random_state=rng), 0.005, rng, resamples=100)
            true_rate = float(distribution.sf(result["threshold"]))
            low, high = result["false_reject_interval"]
            inside += low <= true_rate <= high
            ratios.append(true_rate / 0.005)
        assert inside >= 13
        assert 0.5 < float(np.median(ratios)) < 2.0


def test_distribution_free_bound() -> None:
    assert clopper_pearson_upper(0, 30) == pytest.approx(1 - 0.05 ** (1 / 30), rel=1e-6)
    assert clopper_pearson_upper(30, 30) == 1.0
    assert minimum_good(0.001) == 100 and minimum_good(0.1) == 30


def test_too_few_good_images_names_the_minimum() -> None:
    with pytest.raises(CalibrationError, match="at least 100 are needed"):
        false_reject_threshold(np.random.default_rng(0).random(50), 0.001, np.random.default_rng(0))


@pytest.fixture(scope="module")
def calibration_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good images for calibration and held out, and bad images, all from the brick photo at 64 px."""
    from export.data.texture_dataset import make_texture_dataset

    root = tmp_path_factory.mktemp("calib")
    make_texture_dataset(
        "brick", root / "data", image_size=64, train=1, test_good=160, test_per_defect=5, crop=96, seed=7,
        defects=("scratch", "crack", "stain", "shape"),
    )  # fmt: skip
    sets = {name: root / name for name in ("good", "held_out", "bad")}
    for folder in sets.values():
        folder.mkdir()
    for i, path in enumerate(sorted((root / "data" / "test" / "good").glob("*.png"))):
        shutil.copy(path, sets["good" if i % 2 == 0 else "held_out"] / path.name)
    for path in (root / "data" / "test").rglob("*.png"):
        if path.parent.name != "good":
            shutil.copy(path, sets["bad"] / f"{path.parent.name}_{path.name}")
    return sets


@pytest.fixture
def engine_copy(onnx_engine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "memseg.onnx"
    shutil.copy(onnx_engine, target)
    shutil.copy(sidecar_path(onnx_engine), sidecar_path(target))
    return target


def test_calibration_holds_on_held_out_images_and_is_written_with_history(
    engine_copy: Path, calibration_sets: dict[str, Path], tmp_path: Path
) -> None:
    first = calibrate(engine_copy, calibration_sets["good"], calibration_sets["bad"], 0.02, tmp_path / "report")
    with open_engine(engine_copy) as engine:
        held_out = [
            cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
            for p in sorted(calibration_sets["held_out"].glob("*.png"))
        ]
        scores = np.concatenate([engine.infer(np.stack(held_out[i : i + 4])).score for i in range(0, len(held_out), 4)])
    held_out_rate = float((scores >= first["threshold"]).mean())
    proven = clopper_pearson_upper(int((scores >= first["threshold"]).sum()), len(scores))
    assert held_out_rate <= max(first["false_reject_interval"][1], proven)
    assert first["bad"]["bad_images"] == 20 and 0 <= first["bad"]["escape_at_threshold"] <= 1
    sidecar = read_sidecar(engine_copy)
    assert sidecar.calibration["threshold"] == first["threshold"] and sidecar.calibration_history == []
    assert sidecar.calibration["engine_sha256"] == sidecar.sha256
    for name in ("scores.png", "roc_pr.png", "hardest.png"):
        assert cv2.imread(str(tmp_path / "report" / name)) is not None
    assert "Image-score threshold" in (tmp_path / "report" / "report.md").read_text()
    rows = (tmp_path / "report" / "scores.csv").read_text().splitlines()
    assert rows[0] == "set,image,score,map_max" and len(rows) == 1 + 80 + 20
    second = calibrate(engine_copy, calibration_sets["good"], None, 0.05)
    sidecar = read_sidecar(engine_copy)
    assert sidecar.calibration["threshold"] == second["threshold"] < first["threshold"]
    assert sidecar.calibration_history[0]["threshold"] == first["threshold"]
    assert not list(engine_copy.parent.glob("*.tmp"))
    thresholds = Thresholds.resolve(sidecar, None, None)
    assert thresholds.origin == "calibration" and thresholds.score == second["threshold"]


def test_a_calibration_from_another_artefact_is_refused(engine_copy: Path, calibration_sets: dict[str, Path]) -> None:
    calibrate(engine_copy, calibration_sets["good"], None, 0.05)
    sidecar = read_sidecar(engine_copy)
    sidecar.calibration["engine_sha256"] = "0" * 64
    with pytest.raises(ThresholdError, match="made for another artefact"):
        Thresholds.resolve(sidecar, None, None)


def test_images_of_another_size_are_named(engine_copy: Path, tmp_path: Path, calibration_sets: dict[str, Path]) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(calibration_sets["good"], folder)
    cv2.imwrite(str(folder / "zz_big.png"), np.zeros((100, 120, 3), np.uint8))
    with pytest.raises(CalibrationError, match=r"zz_big\.png: image is 120x100, the engine takes 64x64"):
        calibrate(engine_copy, folder, None, 0.05)
    assert read_sidecar(engine_copy).calibration is None


def test_an_engine_that_outputs_nan_is_refused(
    engine_copy: Path, calibration_sets: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_runtime import FaultyEngine

    monkeypatch.setattr(calibration_run, "open_engine", lambda path: FaultyEngine(open_engine(path), nan_on={3}))
    with pytest.raises(CalibrationError, match="outputs NaN or Inf on .*\\.png"):
        calibrate(engine_copy, calibration_sets["good"], None, 0.05)
    assert read_sidecar(engine_copy).calibration is None


def test_calibrate_cli_says_what_is_missing(engine_copy: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "few").mkdir()
    for i in range(5):
        cv2.imwrite(str(tmp_path / "few" / f"{i}.png"), np.zeros((64, 64, 3), np.uint8))
    code = "import sys; from calibration.cli import calibrate_main as m; sys.exit(m(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "--engine", str(engine_copy), "--good", str(tmp_path / "few")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "5 good images cannot support" in result.stderr
    assert "Traceback" not in result.stderr
    json.dumps(read_sidecar(engine_copy).to_dict())


def test_drift_is_reported_when_good_scores_move_and_cleared_when_they_return() -> None:
    monitor = DriftMonitor(mean=-3.0, std=0.5, window=200, check_every=50)
    rng = np.random.default_rng(0)
    to_score = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    changes = [c for z in rng.normal(-3.0, 0.5, 400) if (c := monitor.add(float(to_score(z))))]
    assert changes == []
    changes = [c for z in rng.normal(-1.5, 0.5, 400) if (c := monitor.add(float(to_score(z))))]
    assert changes and changes[0]["drift"] is True and changes[0]["shift_std"] > 1
    changes = [c for z in rng.normal(-3.0, 0.5, 400) if (c := monitor.add(float(to_score(z))))]
    assert changes[-1]["drift"] is False
