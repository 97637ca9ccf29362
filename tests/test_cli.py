"""The command-line tools answer bad input with one clear error line and status 2, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str) -> subprocess.CompletedProcess:
    code = f"import sys; from export.cli import {args[0]} as main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args[1:]], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "train/good"),
        (lambda root: (root / "train" / "good").mkdir(parents=True), "holds no images"),
    ],
)
def test_train_with_a_bad_data_folder(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path)
    result = run("train_main", "--data", str(tmp_path), "--out", str(tmp_path / "m.pt"))
    assert result.returncode == 2
    assert "edge-train: error:" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_the_default_model_is_patchcore(tmp_path: Path, brick_dataset: Path) -> None:
    out = tmp_path / "default.pt"
    trained = run("train_main", "--data", str(brick_dataset), "--out", str(out), "--image-size", "64", "--no-progress")
    assert trained.returncode == 0, trained.stderr
    from export.checkpoint import read_checkpoint

    assert read_checkpoint(out)["model"] == "patchcore"


def test_eval_with_a_file_that_is_not_a_checkpoint(tmp_path: Path, brick_dataset: Path) -> None:
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("hello")
    result = run("eval_main", "--checkpoint", str(bogus), "--data", str(brick_dataset), "--device", "cpu")
    assert result.returncode == 2 and "damaged or not a checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_dataset_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    result = run("dataset_main", "--texture", "grass", "--out", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_train_then_eval_end_to_end(tmp_path: Path, brick_dataset: Path) -> None:
    out = tmp_path / "memseg.pt"
    trained = run(
        "train_main",
        *("--model", "memseg", "--data", str(brick_dataset), "--out", str(out), "--image-size", "64"),
        "--memory-samples",
        "2",
        *("--iterations", "3", "--batch-size", "2", "--device", "cpu", "--no-progress"),
    )
    assert trained.returncode == 0, trained.stderr
    assert "random initialisation" in trained.stderr
    evaluated = run("eval_main", "--checkpoint", str(out), "--data", str(brick_dataset), "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert {"image_auroc", "pixel_auroc", "pro", "f1_max", "per_defect"} <= set(metrics)
    assert Path(metrics["grid"]).is_file()
