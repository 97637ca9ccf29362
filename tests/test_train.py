"""A tiny training run on the CPU, the checkpoint it writes, and evaluation of it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from export.checkpoint import load_model, read_checkpoint
from export.errors import CheckpointError, DataError
from export.evaluate import evaluate
from export.models.memseg.training import learning_rate_factor, split_memory


@pytest.fixture(scope="module")
def trained(tiny_checkpoint: tuple[Path, dict]) -> tuple[Path, dict]:
    return tiny_checkpoint


def test_training_lowers_the_loss(trained: tuple[Path, dict]) -> None:
    _, summary = trained
    assert summary["loss_last"] < 0.7 * summary["loss_first"]
    assert summary["train_images"] == 9 and summary["memory_images"] == 3


def test_checkpoint_round_trip_gives_the_same_outputs(trained: tuple[Path, dict], brick_dataset: Path) -> None:
    path, _ = trained
    payload = read_checkpoint(path)
    assert payload["model"] == "memseg" and payload["config"]["image_size"] == 64
    assert payload["state_dict"]["memory_images"].shape == (3, 64, 64, 3)
    first, _ = load_model(path)
    second, _ = load_model(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(first(x), second(x))


def test_evaluation_reports_every_metric_per_defect_and_writes_a_grid(
    trained: tuple[Path, dict], brick_dataset: Path, tmp_path: Path
) -> None:
    path, _ = trained
    result = evaluate(path, brick_dataset, "cpu", tmp_path / "grid.png")
    for key in ("image_auroc", "pixel_auroc", "pro", "f1_max"):
        assert 0.0 <= result[key] <= 1.0
    assert set(result["per_defect"]) == {"scratch", "crack", "stain", "shape"}
    assert (tmp_path / "grid.png").stat().st_size > 1000
    json.dumps(result)


def test_memory_split_keeps_memory_apart_and_refuses_too_few_images() -> None:
    memory, rest = split_memory(10, 4, np.random.default_rng(0))
    assert len(memory) == 4 and len(rest) == 6 and not set(memory) & set(rest)
    with pytest.raises(DataError, match="at least 32.*lower --memory-samples"):
        split_memory(20, 30, np.random.default_rng(0))


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    factors = [learning_rate_factor(s, 100, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and max(factors) == pytest.approx(1.0)
    assert factors[-1] < 0.01 and all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))


def test_bad_checkpoints_are_refused_clearly(tmp_path: Path, trained: tuple[Path, dict]) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "none.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(trained[0].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="damaged"):
        read_checkpoint(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a checkpoint made by edge-train"):
        read_checkpoint(other)
