"""The documentation holds no measured figure typed by hand: every accuracy or speed table is a file a command
wrote (included with ``--8<--``), and every page links only what exists."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.readme import BLOCK, included

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]

# What a measured figure looks like: an AUROC-like fraction, a time, a rate, a speed-up, a size, a decimal share.
MEASURED = re.compile(
    r"\b0\.\d{3,4}\b"
    r"|\b\d[\d,.]*\s?(?:ms|µs|frames/s|judged/s|verdicts/s|GFLOP|TFLOP/s|GB/s)\b"
    r"|\b\d+(?:\.\d+)?\s?×(?!\w)"
    r"|\b\d+(?:\.\d+)?\s?(?:MB|GB)\b"
    r"|\b\d+\.\d+\s?%"
)
# Settings, limits and targets that look like figures but are not measurements.
NOT_MEASURED = (
    "256 MB",  # PatchCore refuses a bank larger than this
    "more than\n0.005",  # the fidelity gate's tolerance
    "3.7 %",  # the share of the map an image score averages
    "≥ 5,000 frames/s",  # a target set for an H100
    "≤ 1.0 ms",  # a target set for an H100
    "p99 ≤ 2 ms",  # a target set for an H100
    "10 ms publishing interval",
    "20 ms a frame",  # the default model's CPU budget
)


def prose(text: str) -> str:
    """The page without code blocks, inline code, included files and link targets."""
    text = BLOCK.sub("", text)
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = re.sub(r"^--8<--.*$", "", text, flags=re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def test_no_page_types_a_measured_figure() -> None:
    found = []
    for page in PAGES:
        text = prose(page.read_text())
        for allowed in NOT_MEASURED:
            text = text.replace(allowed, "")
        found += [
            f"{page.relative_to(ROOT)}: {m.group(0)!r} in {text[max(0, m.start() - 60) : m.end() + 20]!r}"
            for m in MEASURED.finditer(text)
        ]
    assert not found, "figures typed by hand (include the command's results file instead):\n" + "\n".join(found)


def test_included_files_exist_and_were_written_by_commands() -> None:
    for page in PAGES:
        for name in re.findall(r'^--8<-- "([^"]+)"', page.read_text(), flags=re.M):
            assert (ROOT / name).is_file(), f"{page.name} includes {name}, which does not exist"
            assert name.startswith("benchmarks/results/"), f"{page.name} includes {name}: not a command's output"


def test_the_readme_holds_its_results_files_as_they_are() -> None:
    """The README's tables are copies of results files (``python -m benchmarks.readme`` makes them), never edited."""
    text = (ROOT / "README.md").read_text()
    assert BLOCK.search(text), "the README includes no results file"
    assert included(text, ROOT) == text, "README.md differs from the files it includes: python -m benchmarks.readme"
