"""Shared fixtures: a small real-texture dataset made once per pytest run."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

# pylon reads this when its transport layers start: two emulated Basler cameras for the camera tests.
os.environ.setdefault("PYLON_CAMEMU", "2")


@pytest.fixture(scope="session")
def brick_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MVTec-style dataset from scikit-image's brick photo (64 px images; four defect kinds, 2 each)."""
    from export.data.texture_dataset import make_texture_dataset

    root = tmp_path_factory.mktemp("data") / "brick"
    kinds = ("scratch", "crack", "stain", "shape")
    make_texture_dataset(
        "brick", root, image_size=64, train=12, test_good=4, test_per_defect=2, crop=96, seed=1, defects=kinds
    )
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(brick_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A MemSeg checkpoint trained for 40 iterations at 64 px on the brick set, and its training summary."""
    from export.train import train

    out = tmp_path_factory.mktemp("ckpt") / "memseg.pt"
    values = {"image_size": 64, "memory_samples": 3, "iterations": 40, "batch_size": 4}
    with pytest.warns(UserWarning, match="random initialisation"):
        summary = train("memseg", brick_dataset, out, values, device="cpu", seed=0, progress=False)
    return out, summary


@pytest.fixture(scope="session")
def onnx_engine(brick_dataset: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The tiny checkpoint exported to an FP32 ONNX taking 64×64 RGB frames, batch up to 4. Where torch is not
    installed (the line side alone), the colour-distance model of ``tests/colour_model.py`` fitted on the same
    good images stands in for it, so the line-side tests run there too."""
    from edge.sidecar import FrameSpec

    path = tmp_path_factory.mktemp("engine") / "memseg.onnx"
    frame = FrameSpec(64, 64, "rgb8", max_batch=4)
    if importlib.util.find_spec("torch") is None:
        from tests.colour_model import write_colour_model

        return write_colour_model(brick_dataset / "train" / "good", path, frame)
    from export.exporter import export_artefact

    export_artefact(request.getfixturevalue("tiny_checkpoint")[0], path, frame, "fp32")
    return path


@pytest.fixture(scope="session")
def part_folder(brick_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real test images in capture order (each twice), plus an unreadable file and a frame of the wrong size."""
    folder = tmp_path_factory.mktemp("parts")
    images = sorted((brick_dataset / "test").rglob("*.png")) * 2  # 24 frames: enough for five batches of four
    for i, path in enumerate(images):
        shutil.copy(path, folder / f"{i:03d}_{path.parent.name}.png")
    (folder / "050_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cv2.imwrite(str(folder / "051_wrong_size.png"), np.zeros((32, 48, 3), np.uint8))
    return folder
