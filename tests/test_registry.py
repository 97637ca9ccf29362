"""Every registered model through the whole contract: train a few iterations → export → edge-verify against
the checkpoint → edge-calibrate → edge-run on a folder → one verdict per frame, judged at the calibrated
threshold. The test-only squared-error autoencoder (tests/distance_model.py) takes the unbounded-distance path
through calibration, the line, control and drift."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

import tests.distance_model  # noqa: F401  (registers test-squared-error)
from calibration.run import calibrate
from edge.drift import DriftMonitor
from edge.engines import open_engine
from edge.judge import ThresholdError, Thresholds, judge
from edge.sidecar import FrameSpec, read_sidecar
from edge.sinks import reject_pictures
from export.exporter import export_artefact
from export.models import get_spec, model_names
from export.train import train
from export.verify import verify
from tests.test_runtime import free_endpoint, station

FRAME = FrameSpec(64, 64, "rgb8", max_batch=2)


@pytest.fixture(scope="module")
def good_parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 held-out good parts at 64 px for calibration (a different seed from the training set)."""
    from export.data.texture_dataset import make_texture_dataset

    root = tmp_path_factory.mktemp("good") / "brick"
    make_texture_dataset("brick", root, image_size=64, train=0, test_good=40, test_per_defect=0, crop=96, seed=7)
    return root / "test" / "good"


@pytest.mark.parametrize("name", model_names())
def test_a_registered_model_goes_from_training_to_verdicts(
    name: str, brick_dataset: Path, good_parts: Path, part_folder: Path, tmp_path: Path
) -> None:
    spec = get_spec(name)
    checkpoint, artefact = tmp_path / f"{name}.pt", tmp_path / f"{name}.onnx"
    summary = train(name, brick_dataset, checkpoint, {**spec.quick, "image_size": 64}, "cpu", 0, progress=False)
    assert summary["model"] == name

    sidecar = export_artefact(checkpoint, artefact, FRAME, "fp32")
    assert sidecar.model == name and sidecar.score.kind == spec.model.score_kind
    check = verify(artefact, checkpoint, brick_dataset)
    assert check.passed, check.to_dict()

    result = calibrate(artefact, good_parts, target=0.05, report=tmp_path / "report")
    assert result["score_kind"] == spec.model.score_kind and np.isfinite(result["threshold"])
    threshold, pixel = result["threshold"], result["pixel_threshold"]
    if spec.model.score_kind == "probability":
        assert 0.0 <= threshold <= 1.0 and pixel <= 1.0
    assert (tmp_path / "report" / "scores.png").is_file()

    jsonl, rejects = tmp_path / "verdicts.jsonl", tmp_path / "rejects"
    run = subprocess.run(
        station(
            artefact,
            f"folder://{part_folder}",
            free_endpoint(),
            "--wait-subscribers",
            "0",
            "--jsonl",
            str(jsonl),
            "--rejects",
            str(rejects),
        ),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    verdicts = [json.loads(line) for line in jsonl.read_text().splitlines()]
    names = sorted(p.name for p in part_folder.glob("*.png"))
    assert len(verdicts) == len(names) and [v["frame_id"] for v in verdicts] == list(range(len(names)))
    with open_engine(artefact) as engine:
        for file, v in zip(names, verdicts, strict=True):
            image = cv2.imread(str(part_folder / file))
            if image is None or image.shape[:2] != (64, 64):
                assert v["verdict"] == "error"
                continue
            out = engine.infer(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)[None])
            expected, _, _ = judge(
                float(out.score[0]), out.anomaly_map[0, 0], Thresholds(threshold, pixel, "t"), engine.frame
            )
            assert v["verdict"] == expected and v["threshold"] == threshold, file
    failed = sum(v["verdict"] == "fail" for v in verdicts)
    assert len(reject_pictures(rejects)) >= min(failed, 1)


def test_distance_scores_take_thresholds_above_one_and_watch_drift_on_a_log_scale(
    brick_dataset: Path, good_parts: Path, tmp_path: Path
) -> None:
    checkpoint, artefact = tmp_path / "d.pt", tmp_path / "d.onnx"
    train("test-squared-error", brick_dataset, checkpoint, {"image_size": 64}, "cpu", 0, progress=False)
    export_artefact(checkpoint, artefact, FRAME, "fp32")
    calibrate(artefact, good_parts, target=0.05)
    sidecar = read_sidecar(artefact)
    assert sidecar.score.kind == "distance" and "good_z_mean" in sidecar.calibration
    assert Thresholds.resolve(sidecar, 250.0, None).score == 250.0  # a distance threshold may exceed 1
    with pytest.raises(ThresholdError, match="distances"):
        Thresholds.resolve(sidecar, -1.0, None)
    monitor = DriftMonitor.from_calibration(sidecar.calibration, sidecar.score)
    rng = np.random.default_rng(0)
    typical = np.exp(sidecar.calibration["good_z_mean"] + sidecar.calibration["good_z_std"] * rng.standard_normal(400))
    assert not any(monitor.add(float(s)) for s in typical)
    changes = [monitor.add(float(s) * 20.0) for s in typical]  # the good parts' distances grow twentyfold
    assert any(c and c["drift"] for c in changes)
