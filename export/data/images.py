"""Reading MVTec-style dataset folders: ``train/good``, ``test/<defect>``, ``ground_truth/<defect>``.

Images are decoded to RGB uint8. Training images are resized to the model's square input with area
interpolation (the training functions paint and augment on them); test images stay as the camera gives them, so
that evaluation feeds them through the exported graph's own frame preprocessing (:mod:`export.evaluate`). Every
problem a user can fix (missing or empty folders, unreadable files, images of mixed sizes, missing masks) raises
:class:`DataError` naming the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.sources import IMAGE_SUFFIXES
from export.errors import DataError

GOOD = "good"


@dataclass(frozen=True)
class TestSample:
    """One test image with its ground truth (an all-zero mask for good images)."""

    path: Path
    defect: str
    image: np.ndarray  # H×W×3 uint8 RGB, as the file holds it
    mask: np.ndarray  # H×W bool, the image's size

    @property
    def is_defective(self) -> bool:
        return self.defect != GOOD


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to H×W×3 RGB uint8 (grey images are replicated to three channels)."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if image is None:
        raise DataError(f"cannot read image {path}: not a decodable image file; replace or remove it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    """Decode a ground-truth mask to H×W bool (any non-zero pixel is defective)."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
    if mask is None:
        raise DataError(f"cannot read mask {path}: not a decodable image file; replace or remove it")
    return mask > 0


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size``×``size`` with area interpolation (antialiased when shrinking)."""
    if image.shape[:2] == (size, size):
        return image
    shrinking = image.shape[0] >= size and image.shape[1] >= size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a bool mask to ``size``×``size`` (nearest neighbour, stays binary)."""
    if mask.shape[:2] == (size, size):
        return mask
    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0


def _read_same_size(paths: list[Path], folder: Path) -> list[np.ndarray]:
    images = [read_image(p) for p in paths]
    sizes: dict[tuple[int, int], Path] = {}
    for path, image in zip(paths, images, strict=True):
        sizes.setdefault(image.shape[:2], path)
    if len(sizes) > 1:
        listed = ", ".join(f"{p.relative_to(folder)} is {w}×{h}" for (h, w), p in sizes.items())
        raise DataError(
            f"images in {folder} have different sizes ({listed}); a camera delivers one size: "
            "crop or resize them all to one size first"
        )
    return images


def load_good_images(root: Path, image_size: int) -> list[np.ndarray]:
    """The training images of ``root/train/good``, resized to the model size."""
    folder = Path(root) / "train" / GOOD
    if not folder.is_dir():
        raise DataError(
            f"{folder} not found: the data folder must follow the MVTec layout "
            "(train/good/*.png for good images; test/<defect>/ and ground_truth/<defect>/ for evaluation)"
        )
    paths = list_images(folder)
    if not paths:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): add pictures of good parts")
    return [resize_image(image, image_size) for image in _read_same_size(paths, folder)]


def load_test_set(root: Path) -> list[TestSample]:
    """Every image of ``root/test/*`` (all of one size, as a camera delivers them) with its mask from
    ``root/ground_truth/<defect>/<name>_mask.*``."""
    test_root = Path(root) / "test"
    if not test_root.is_dir():
        raise DataError(f"{test_root} not found: evaluation needs test/good and test/<defect> folders")
    folders = sorted(p for p in test_root.iterdir() if p.is_dir())
    listed = [(folder, path) for folder in folders for path in list_images(folder)]
    images = _read_same_size([path for _, path in listed], test_root)
    samples: list[TestSample] = []
    for (folder, path), image in zip(listed, images, strict=True):
        if folder.name == GOOD:
            mask = np.zeros(image.shape[:2], dtype=bool)
        else:
            mask = read_mask(_mask_path(Path(root), folder.name, path))
            if mask.shape != image.shape[:2]:
                raise DataError(
                    f"mask for {path} is {mask.shape[1]}×{mask.shape[0]} but the image is "
                    f"{image.shape[1]}×{image.shape[0]}: masks must match their images"
                )
        samples.append(TestSample(path, folder.name, image, mask))
    if not samples:
        raise DataError(f"{test_root} holds no images: add test/good and test/<defect> images")
    if not any(s.is_defective for s in samples) or all(s.is_defective for s in samples):
        raise DataError(f"{test_root} needs both good and defective images to measure detection")
    return samples


def _mask_path(root: Path, defect: str, image_path: Path) -> Path:
    folder = root / "ground_truth" / defect
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{image_path.stem}_mask{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(
        f"no mask for {image_path}: expected {folder / (image_path.stem + '_mask.png')} (binary, white = defect)"
    )
