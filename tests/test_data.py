"""Reading MVTec-style folders, and clear errors for folders a user got wrong."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from export.data.images import load_good_images, load_test_set, read_image
from export.errors import DataError


def write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def test_reads_the_generated_dataset(brick_dataset: Path) -> None:
    good = load_good_images(brick_dataset, 64)
    assert len(good) == 12 and good[0].shape == (64, 64, 3) and good[0].dtype == np.uint8
    samples = load_test_set(brick_dataset)
    defects = {s.defect for s in samples}
    assert {"good", "scratch", "crack", "stain", "shape"} <= defects
    for s in samples:  # test images as the camera gives them: the graph's own preprocessing resizes them
        assert s.image.shape == (64, 64, 3) and s.mask.shape == (64, 64)
        assert s.mask.any() == s.is_defective


def test_grey_images_become_rgb_and_bgr_files_are_read_as_rgb(tmp_path: Path) -> None:
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    write(tmp_path / "blue.png", bgr)
    write(tmp_path / "grey.png", np.full((8, 8), 7, np.uint8))
    assert read_image(tmp_path / "blue.png")[0, 0].tolist() == [0, 0, 255]
    assert read_image(tmp_path / "grey.png").shape == (8, 8, 3)


def test_missing_folder_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train/good"):
        load_good_images(tmp_path, 64)


def test_empty_folder_says_to_add_images(tmp_path: Path) -> None:
    (tmp_path / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_good_images(tmp_path, 64)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    write(tmp_path / "train/good/a.png", np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "train/good/b.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError, match=r"b\.png"):
        load_good_images(tmp_path, 64)


def test_mixed_sizes_are_refused_with_the_sizes(tmp_path: Path) -> None:
    write(tmp_path / "train/good/a.png", np.zeros((16, 16, 3), np.uint8))
    write(tmp_path / "train/good/b.png", np.zeros((20, 16, 3), np.uint8))
    with pytest.raises(DataError, match=r"different sizes.*16×16.*16×20"):
        load_good_images(tmp_path, 64)


def test_defect_image_without_mask_is_named(tmp_path: Path) -> None:
    write(tmp_path / "test/good/0.png", np.zeros((16, 16, 3), np.uint8))
    write(tmp_path / "test/hole/0.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DataError, match=r"no mask for .*hole.*0_mask\.png"):
        load_test_set(tmp_path)


def test_test_images_of_two_sizes_are_named(tmp_path: Path) -> None:
    write(tmp_path / "test/good/0.png", np.zeros((16, 16, 3), np.uint8))
    write(tmp_path / "test/hole/0.png", np.zeros((16, 24, 3), np.uint8))
    write(tmp_path / "ground_truth/hole/0_mask.png", np.zeros((16, 24), np.uint8))
    with pytest.raises(DataError, match=r"good/0\.png is 16×16, hole/0\.png is 24×16.*one size"):
        load_test_set(tmp_path)


def test_test_set_needs_good_and_defective_images(tmp_path: Path) -> None:
    write(tmp_path / "test/good/0.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DataError, match="both good and defective"):
        load_test_set(tmp_path)
