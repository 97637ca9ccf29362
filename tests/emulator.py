"""What pylon's camera emulator streams in the tests: a folder of the first test parts."""

from __future__ import annotations

import shutil
from pathlib import Path


def emulator_images(part_folder: Path, folder: Path, count: int = 4) -> Path:
    """The first ``count`` parts of ``part_folder`` (``0*.png``, name order: readable frames of the engine's size)
    copied into ``folder/images``, for ``--emulator-images``."""
    images = folder / "images"
    images.mkdir()
    for path in sorted(part_folder.glob("0*.png"))[:count]:
        shutil.copy(path, images / path.name)
    return images
