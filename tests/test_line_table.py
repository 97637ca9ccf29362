"""benchmarks.line_table: edge-bench results as the line-against-engine table; bad folders get one line."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.line_table import main


def bench(
    folder: Path, alone_ms: float, full_fps: float, paced_p50: float, infer_p50: float, after_ms: float | None = None
) -> Path:
    stages = {"receive_to_publish": {"p50": paced_p50, "p99": 2 * paced_p50}, "infer": {"p50": infer_p50}}
    result = {
        "engine": "m.onnx",
        "backend": "onnxruntime",
        "precision": "fp32",
        "machine": {"cpu": "Some CPU", "cpu_flags": ["avx2", "fma"], "cores": 2, "date": "2026-12-07 10:00:00"},
        "engine_only": [{"batch": 1, "latency_ms": {"p50": alone_ms}, "frames_per_s": 1e3 / alone_ms}],
        "pipeline": {"frames_per_s": full_fps, "records": False},
        "pipeline_paced": {"stages_ms": stages, "failed": 40, "frames": 40},
    }
    if after_ms is not None:
        result["engine_alone_after_line"] = {
            "batch": 1,
            "latency_ms": {"p50": after_ms},
            "frames_per_s": 1e3 / after_ms,
        }
    folder.mkdir()
    (folder / "bench.json").write_text(json.dumps(result))
    return folder


def test_one_row_per_run_with_ratio_and_overhead(tmp_path: Path, capsys) -> None:
    runs = [bench(tmp_path / "before", 10.0, 85.0, 11.5, 10.5), bench(tmp_path / "after", 10.0, 92.0, 10.8, 10.2)]
    assert main([*map(str, runs), "--out", str(tmp_path / "t.md")]) == 0
    table = (tmp_path / "t.md").read_text()
    assert "| before | 10.00 (100.0) | 85.0 (85 %) | 11.50 / 23.0 | +1.50 (+15.0 %) | – | +1.00 | 40/40 |" in table
    assert "| after | 10.00 (100.0) | 92.0 (92 %) | 10.80 / 21.6 | +0.80 (+8.0 %) | – | +0.60 | 40/40 |" in table
    assert "- after: m.onnx (onnxruntime, fp32), Some CPU (avx2, fma; 2 cores), 2026-12-07 10:00:00" in table


def test_a_run_that_timed_the_engine_before_and_after_the_line_is_held_to_their_mean(tmp_path: Path) -> None:
    # the engine slowed from 10 to 12.5 ms between its two measurements (100 and 80 frames/s): the line's 81 frames/s
    # is 90 % of their mean, not 81 % of the first one
    run = bench(tmp_path / "drift", 10.0, 81.0, 11.25, 10.5, after_ms=12.5)
    assert main([str(run), "--out", str(tmp_path / "t.md")]) == 0
    table = (tmp_path / "t.md").read_text()
    assert "| drift | 10.00 → 12.50 (90.0) | 81.0 (90 %) | 11.25 / 22.5 | +0.00 (+0.0 %) | – | +0.75 | 40/40 |" in table


def test_rounds_in_turns_hold_the_line_to_the_engine_alone_of_the_same_round(tmp_path: Path) -> None:
    # the machine slowed from round to round and the middle round was noisy: per round the line adds 0.5, 3.0 and
    # 0.6 ms to the engine alone paced alike; the median (0.6 ms) is 5 % of the engine's median 12 ms, where the
    # median of the line's p50s less the engine's would say 2.6 ms
    folder = bench(tmp_path / "turns", 9.0, 95.0, 12.1, 11.0)
    result = json.loads((folder / "bench.json").read_text())
    result["pipeline_paced"]["rounds"] = [
        {"engine_alone_p50": alone, "receive_to_publish_p50": alone + added, "infer_p50": alone, "added_p50": added}
        for alone, added in ((10.0, 0.5), (12.0, 3.0), (14.0, 0.6))
    ]
    (folder / "bench.json").write_text(json.dumps(result))
    assert main([str(folder), "--out", str(tmp_path / "t.md")]) == 0
    assert "| +3.10 (+34.4 %) | +0.60 (+5.0 %) | +1.10 |" in (tmp_path / "t.md").read_text()


def test_a_folder_without_results_is_one_line(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bench.json not found" in err and "Traceback" not in err
