"""benchmarks.contamination: the fraction read from the dataset, the table's losses, the plot written."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.contamination import main


def _dataset(root: Path, good: int, defective: int) -> Path:
    (root / "train" / "good").mkdir(parents=True)
    for i in range(good):
        (root / "train" / "good" / f"{i:03d}.png").write_bytes(b"")
    (root / "train_contamination" / "crack").mkdir(parents=True)
    for i in range(defective):
        (root / "train_contamination" / "crack" / f"{i:03d}_mask.png").write_bytes(b"")
    return root


def test_the_table_and_plot_of_auroc_against_contamination(tmp_path: Path, capsys) -> None:
    results = []
    for name, defective, auroc in (("clean", 0, 0.90), ("twenty", 4, 0.85), ("forty", 8, 0.70)):
        _dataset(tmp_path / name, 20, defective)
        path = tmp_path / f"{name}.json"  # edge-eval ran in tmp_path: the dataset path is relative to it
        path.write_text(json.dumps({"data": name, "image_auroc": auroc, "pixel_auroc": 0.9, "pro": 0.8}))
        results.append(f"Model={path}")
    assert main([*reversed(results), "--out", str(tmp_path / "plot.png")]) == 0
    table = capsys.readouterr().out
    assert "| 0% | 20% | 40% |" in table and "| 0.050, 0.200 |" in table
    assert (tmp_path / "plot.png").stat().st_size > 1000 and (tmp_path / "plot.md").read_text() == table


def test_runs_of_one_model_at_one_fraction_are_averaged(tmp_path: Path, capsys) -> None:
    results = []
    for name, defective, aurocs in (("clean", 0, (0.90, 0.96)), ("twenty", 4, (0.80, 0.88, 0.84))):
        _dataset(tmp_path / name, 20, defective)
        for seed, auroc in enumerate(aurocs):
            path = tmp_path / f"{name}-{seed}.json"
            path.write_text(json.dumps({"data": name, "image_auroc": auroc, "pixel_auroc": 0.9, "pro": 0.8}))
            results.append(f"Model={path}")
    assert main([*results, "--out", str(tmp_path / "plot.png")]) == 0
    table = capsys.readouterr().out
    assert "0.930 / 0.900 / 0.800 (mean of 2; image 0.900–0.960)" in table
    assert "0.840 / 0.900 / 0.800 (mean of 3; image 0.800–0.880)" in table and "| 0.090 |" in table


def test_bad_arguments_get_one_error_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "partial.json").write_text(json.dumps({"data": "nowhere", "image_auroc": 0.9}))
    (tmp_path / "lost.json").write_text(
        json.dumps({"data": "nowhere", "image_auroc": 0.9, "pixel_auroc": 0.9, "pro": 0.8})
    )
    for name in ("brick", "grass"):
        _dataset(tmp_path / name, 20, 0)
        (tmp_path / f"{name}.json").write_text(
            json.dumps({"data": str(tmp_path / name), "image_auroc": 0.9, "pixel_auroc": 0.9, "pro": 0.8})
        )
    mixed = [f"M={tmp_path / 'brick.json'}", f"M={tmp_path / 'grass.json'}"]
    assert main(mixed) == 2
    err = capsys.readouterr().err
    assert "has results on two datasets" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    for argument, message in (
        ("no-separator.json", "write MODEL=EVAL.json"),
        (f"M={tmp_path / 'absent.json'}", "not an edge-eval result"),
        (f"M={tmp_path / 'partial.json'}", "no pixel_auroc, pro"),
        (f"M={tmp_path / 'lost.json'}", "is not found here or next to it"),
    ):
        assert main([argument]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
