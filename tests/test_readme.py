"""The README's "your own parts in 5 commands", run as a newcomer would: its shell block as written, with
``DATA`` a set made by ``edge-dataset`` in the layout the README describes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def own_parts_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Your own parts in 5 commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_is_short_and_its_own_parts_commands_judge_a_folder(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs the train extra")
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200
    commands = own_parts_commands()
    assert len(commands) == 5 and [c.split()[0] for c in commands] == [
        "edge-train", "edge-eval", "edge-export", "edge-calibrate", "edge-run",
    ]  # fmt: skip
    data = tmp_path / "DATA"
    subprocess.run(
        ["edge-dataset", "--texture", "gravel", "--out", str(data), "--image-size", "128", "--train", "20",
         "--test-good", "30", "--test-per-defect", "2"],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    outputs = []
    for command in commands:
        result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (command, result.stderr[-2000:])
        outputs.append(result.stdout)
    assert 0.0 <= json.loads(outputs[1])["image_auroc"] <= 1.0 and (tmp_path / "part-eval.png").is_file()
    verdicts = [json.loads(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == len(list((data / "test" / "good").glob("*.png"))) == 30
    assert all(v["verdict"] in ("pass", "fail") for v in verdicts)
    assert sum(v["verdict"] == "pass" for v in verdicts) > 15  # good parts, calibrated for 5 % false rejects
