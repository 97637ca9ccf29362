"""benchmarks.peer_patchcore --merge: earlier runs as one side-by-side table (anomalib itself is not needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.peer_patchcore import main


def run_file(path: Path, seed: int, sets: dict[str, tuple[float, float]]) -> Path:
    """An ``--out`` file of one run: per set, anomalib's and our image AUROC."""

    def result(image: float) -> dict:
        return {"image_auroc": image, "pixel_auroc": 0.99, "pro": 0.95, "train_seconds": 10.0, "test_seconds": 2.0}

    rows = [{"set": s, "seed": seed, "anomalib": result(a), "ours": result(o)} for s, (a, o) in sets.items()]
    path.write_text(json.dumps(rows))
    return path


def test_runs_of_several_seeds_say_each_line_s_seed_with_a_mean_per_set_and_only_keep_the_sets_asked(
    tmp_path: Path,
) -> None:
    first = run_file(tmp_path / "s0.json", 0, {"hubble-s2": (0.95, 0.93), "cell-s2": (1.0, 1.0)})
    second = run_file(tmp_path / "s1.json", 1, {"hubble-s2": (0.94, 0.96)})
    main(["--merge", str(first), str(second), "--only", "hubble-s2", "--out", str(tmp_path / "out" / "m.json")])
    table = (tmp_path / "out" / "m.md").read_text()
    assert "trained with seed 0, 1), one line per set and training seed" in table
    assert "| hubble-s2, seed 0 | 0.950 / " in table and "| -0.0200 / +0.0000 |" in table
    assert "| hubble-s2, seed 1 | 0.940 / " in table and "| +0.0200 / +0.0000 |" in table
    assert "cell-s2" not in table
    assert "| **hubble-s2, mean of 2 seeds** | 0.945 / 0.990 / 0.950 | 10.0 / 2.0 | 0.945 / " in table
    assert (
        table.index("seed 0 |") < table.index("seed 1 |") < table.index("mean of 2 seeds") < table.index("mean of 2**")
    )


def test_one_seed_keeps_plain_set_names(tmp_path: Path) -> None:
    only = run_file(tmp_path / "s0.json", 0, {"a": (0.9, 0.9), "b": (0.8, 0.85)})
    main(["--merge", str(only), "--out", str(tmp_path / "m.json")])
    table = (tmp_path / "m.md").read_text()
    assert "| a | 0.900 / " in table and "| b | 0.800 / " in table and "seed 0 |" not in table


def test_only_without_merge_is_one_error_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(tmp_path), "--only", "a", "--out", str(tmp_path / "m.json")])
    assert exit_info.value.code == 2
    assert "--only picks sets of --merge's files" in capsys.readouterr().err


def test_a_set_not_in_the_files_is_one_error_line(tmp_path: Path, capsys) -> None:
    only = run_file(tmp_path / "s0.json", 0, {"a": (0.9, 0.9)})
    with pytest.raises(SystemExit) as exit_info:
        main(["--merge", str(only), "--only", "z", "--out", str(tmp_path / "m.json")])
    assert exit_info.value.code == 2
    assert "--only z: not in the merged files (their sets: a)" in capsys.readouterr().err
