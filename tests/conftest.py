"""Shared fixtures: a small real-texture dataset made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def brick_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MVTec-style dataset from scikit-image's brick photo (64 px images)."""
    from export.texture_dataset import make_texture_dataset

    root = tmp_path_factory.mktemp("data") / "brick"
    make_texture_dataset("brick", root, image_size=64, train=12, test_good=4, test_per_defect=2, crop=96, seed=1)
    return root
