"""The installed ``edge-run`` console script, as a user runs it: a config file, an ONNX engine and a folder of
images give one verdict per image. CI runs this on the default Python and on Python 3.10 without torch."""

from __future__ import annotations

import json
import subprocess
import sysconfig
from pathlib import Path

import pytest

from tests.test_runtime import free_endpoint


def installed_script(name: str) -> Path:
    """A console script of this interpreter's installation; skips if the project is not installed."""
    script = Path(sysconfig.get_path("scripts")) / name
    if not script.is_file():
        pytest.skip(f"{name} is not installed next to this Python (pip install -e .)")
    return script


def test_edge_run_with_a_config_file_judges_every_image_in_a_folder(
    onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    verdicts_file = tmp_path / "verdicts.jsonl"
    config = tmp_path / "station.toml"
    config.write_text(
        "[station]\n"
        'station = "line1"\n'
        "threshold = 0.5\n"
        f'publish = "{free_endpoint()}"\n'
        "wait_subscribers = 0\n"
        f'jsonl = "{verdicts_file}"\n'
    )
    run = subprocess.run(
        [
            str(installed_script("edge-run")),
            *("--config", str(config)),
            *("--engine", str(onnx_engine)),
            *("--camera", f"folder://{part_folder}"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    verdicts = [json.loads(line) for line in verdicts_file.read_text().splitlines()]
    names = sorted(p.name for p in part_folder.glob("*.png"))
    assert [v["frame_id"] for v in verdicts] == list(range(len(names)))
    by_name = dict(zip(names, verdicts, strict=True))
    assert by_name.pop("050_broken.png")["reason"] == "unreadable_image"
    assert by_name.pop("051_wrong_size.png")["reason"] == "frame_format"
    assert all(v["verdict"] in ("pass", "fail") and 0 <= v["score"] <= 1 for v in by_name.values())
    assert {v["station"] for v in verdicts} == {"line1"}
