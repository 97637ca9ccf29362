"""benchmarks.model_table: trains what it lacks, reuses what it has, counts caught defects at its threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import model_table  # noqa: E402

MODEL = "patchcore:image_size=64:coreset=0.05"
TAG = "patchcore[image_size=64,coreset=0.05]"
SMALL = ["--image-size", "64", "--train", "8", "--test-good", "6", "--test-per-defect", "2", "--frames", "3"]


def test_trains_measures_and_reuses(tmp_path: Path, capsys) -> None:
    argv = [
        "--sets",
        "cell",
        "--seeds",
        "0",
        "--models",
        "patchcore:image_size=64:coreset=0.05",
        "--work",
        str(tmp_path / "w"),
    ]
    assert model_table.main([*argv, "--out", str(tmp_path / "out"), *SMALL]) == 0
    rows = json.loads((tmp_path / "out" / "rows.json").read_text())["rows"]
    (row,) = rows
    assert (
        row["model"] == "patchcore[image_size=64,coreset=0.05]" and row["set"] == "cell" and row["role"] == "held-out"
    )
    assert row["defective"] == 12 and row["test_good"] == 6 and 0 <= row["caught"] <= 12
    assert set(row["per_defect_image_auroc"]) == {"scratch", "crack", "stain", "shape", "pit", "smear"}
    assert row["latency_ms"] > 0 and row["train_seconds"] is not None
    assert (
        "| patchcore[image_size=64,coreset=0.05] | cell (held-out) | 0 |" in (tmp_path / "out" / "table.md").read_text()
    )
    checkpoint = tmp_path / "w" / "models" / "patchcore[image_size=64,coreset=0.05]" / "cell-s0.pt"
    stamp = checkpoint.stat().st_mtime_ns
    assert model_table.main([*argv, "--out", str(tmp_path / "again"), *SMALL]) == 0
    assert checkpoint.stat().st_mtime_ns == stamp  # reused, not trained again
    again = json.loads((tmp_path / "again" / "rows.json").read_text())["rows"][0]
    assert again["image_auroc"] == row["image_auroc"] and again["caught"] == row["caught"]

    # a checkpoint of another preset (an option it lacks, or another value) is trained again
    def retrained_after(change) -> dict:
        payload = torch.load(checkpoint, weights_only=False)
        change(payload["training"]["options"])
        torch.save(payload, checkpoint)
        assert model_table.main([*argv, "--out", str(tmp_path / "third"), *SMALL]) == 0
        return torch.load(checkpoint, weights_only=False)["training"]["options"]

    assert retrained_after(lambda options: options.pop("views"))["views"] == "dihedral"  # an option it lacked
    assert retrained_after(lambda options: options.update(view_pool=3.0))["view_pool"] == 4.0  # another value
    # sets cut in another orientation are not taken for these
    with pytest.raises(SystemExit) as exit_info:
        model_table.main([*argv, "--orientation", "fixed", "--out", str(tmp_path / "fixed"), *SMALL])
    assert exit_info.value.code == 2 and "was cut with --orientation any" in capsys.readouterr().err


def test_training_seeds_train_each_set_again_with_each_seed(tmp_path: Path) -> None:
    argv = ["--sets", "cell", "--seeds", "0", "--training-seeds", "0,1", "--models", MODEL, "--work", str(tmp_path)]
    assert model_table.main([*argv, "--out", str(tmp_path / "out"), *SMALL]) == 0
    rows = json.loads((tmp_path / "out" / "rows.json").read_text())["rows"]
    assert [(r["seed"], r["training_seed"]) for r in rows] == [(0, 0), (0, 1)]
    checkpoints = sorted(p.name for p in (tmp_path / "models" / TAG).iterdir())
    assert checkpoints == ["cell-s0-t1.pt", "cell-s0.pt"]  # the set's own seed keeps the plain name
    payloads = [torch.load(tmp_path / "models" / TAG / n, weights_only=False) for n in checkpoints]
    assert [p["training"]["options"]["seed"] for p in payloads] == [1, 0]
    assert f"| {TAG} | cell (held-out) | 0,0/t1 |" in (tmp_path / "out" / "table.md").read_text()


def test_caught_counts_scores_at_or_above_the_calibrated_threshold(tmp_path: Path, monkeypatch) -> None:
    """The count is the defective test scores at or above the threshold set on the calibration images alone."""
    from benchmarks.model_table import cut_sets, measure
    from export.train import train

    cut = {"image_size": 64, "train": 8, "test_good": 6, "test_per_defect": 2, "orientation": "any"}
    data, good = cut_sets("cell", 0, tmp_path, cut)
    checkpoint = tmp_path / "m.pt"
    train("patchcore", data, checkpoint, {"image_size": 64, "coreset": 0.05}, device="cpu", progress=False)
    seen = {}
    real = model_table.false_reject_threshold

    def spy(scores, target, rng, spec):
        seen["calibration"] = np.asarray(scores)
        seen["result"] = real(scores, target, rng, spec)
        return seen["result"]

    monkeypatch.setattr(model_table, "false_reject_threshold", spy)
    row = measure(checkpoint, data, good)
    assert len(seen["calibration"]) == model_table.CALIBRATION_IMAGES
    assert seen["result"]["target_false_reject"] == model_table.FALSE_REJECT
    from export.checkpoint import load_model
    from export.data.images import load_test_set
    from export.evaluate import predict

    model, _ = load_model(checkpoint, "cpu")
    samples = load_test_set(data)
    _, scores = predict(model, [s.image for s in samples])
    defective = np.array([s.is_defective for s in samples])
    threshold = seen["result"]["threshold"]
    assert row["defective"] == defective.sum() == 12
    assert row["caught"] == (scores[defective] >= threshold).sum()
    assert row["test_false_rejects"] == (scores[~defective] >= threshold).sum()


def test_bad_input_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        model_table.main(["--sets", "moon", "--work", str(tmp_path), "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "give surfaces of" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        model_table.main(["--sets", "cell", "--models", "nosuch", "--work", str(tmp_path), "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "unknown model 'nosuch'" in capsys.readouterr().err


def test_a_training_is_offered_the_checkpoints_of_its_set_and_seed(tmp_path: Path, monkeypatch) -> None:
    """An ensemble takes its members from the models trained already on the same set and seed (edge-train
    --reuse), and its training time counts theirs."""
    offered = {}
    real = model_table.train

    def spy(name, data, out, values, **kwargs):
        offered[Path(out).parent.name] = [p.parent.name for p in kwargs["reuse"]]
        return real(name, data, out, values, **kwargs)

    monkeypatch.setattr(model_table, "train", spy)
    models = [MODEL, "patchcore:image_size=64:coreset=0.1"]
    argv = ["--sets", "cell", "--seeds", "0", "--models", *models, "--work", str(tmp_path / "w")]
    assert model_table.main([*argv, "--out", str(tmp_path / "out"), *SMALL]) == 0
    assert offered == {
        "patchcore[image_size=64,coreset=0.05]": [],
        "patchcore[image_size=64,coreset=0.1]": ["patchcore[image_size=64,coreset=0.05]"],
    }
