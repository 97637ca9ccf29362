"""edge-eval's picture: every image with --all, headed columns, and maps on the threshold colour scale whatever
their units."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from export.data.images import GOOD, TestSample
from export.evaluate import MIN_PANEL, display_level, write_grid


def samples_and_distance_maps(good: int = 2, bad: int = 4) -> tuple[list[TestSample], np.ndarray]:
    samples, maps = [], []
    for i in range(good + bad):
        defect = GOOD if i < good else "crack"
        mask = np.zeros((32, 32), bool)
        amap = np.ones((32, 32), np.float32)  # distances: unbounded, here from 1 to 12
        if defect == GOOD:
            amap[20, 20] = 2.0  # each good image's highest pixel: the colour scale's middle
        else:
            mask[8:16, 8:16] = True
            amap[8:16, 8:16] = 12.0
        samples.append(TestSample(Path(f"{i:03d}.png"), defect, np.full((32, 32, 3), 120, np.uint8), mask))
        maps.append(amap)
    return samples, np.stack(maps)


def red_pixels(image_bgr: np.ndarray) -> int:
    b, r = image_bgr[..., 0].astype(int), image_bgr[..., 2].astype(int)
    return int((r > b + 60).sum())


def test_the_colour_scale_is_set_by_the_good_images_for_any_map_units(tmp_path: Path) -> None:
    samples, maps = samples_and_distance_maps()
    level, meaning = display_level(samples, maps)
    assert level == 2.0 and "good" in meaning
    scores = maps.max(axis=(1, 2))
    write_grid(tmp_path / "defects.png", samples, maps, scores, per_type=None)
    write_grid(tmp_path / "none.png", samples, np.where(maps > 2.0, 1.0, maps), scores, per_type=None)
    difference = red_pixels(cv2.imread(str(tmp_path / "defects.png"))) - red_pixels(
        cv2.imread(str(tmp_path / "none.png"))
    )
    # at 12.0, six times the level, the 4 defects (8×8 map pixels, enlarged k×k) are red; where the map is 1.0,
    # half the level, nothing is (12.0 clipped to [0, 1] first would have made them blue)
    k = MIN_PANEL // 32
    assert difference == pytest.approx(4 * 64 * k * k, rel=0.2)


def test_all_shows_every_image_and_the_default_three_per_type(tmp_path: Path) -> None:
    samples, maps = samples_and_distance_maps(good=4, bad=8)
    scores = maps.max(axis=(1, 2))
    write_grid(tmp_path / "all.png", samples, maps, scores, per_type=None)
    write_grid(tmp_path / "some.png", samples, maps, scores)
    every, some = cv2.imread(str(tmp_path / "all.png")), cv2.imread(str(tmp_path / "some.png"))
    assert every.shape[1] == some.shape[1]
    assert every.shape[0] == 2 * some.shape[0] - 60  # 12 images in 4 rows of 3, 3 + 3 in 2, under one header
    k = MIN_PANEL // 32
    assert red_pixels(every) - red_pixels(some) == pytest.approx(5 * 64 * k * k, rel=0.2)  # 5 more defects


def test_images_larger_than_their_maps_are_drawn_at_the_maps_size(tmp_path: Path) -> None:
    """A frame at 64 px whose map the graph gives at 32 px: input and truth panels are shrunk to the map."""
    samples, maps = samples_and_distance_maps()
    large = [
        TestSample(s.path, s.defect, np.full((64, 64, 3), 120, np.uint8), np.kron(s.mask, np.ones((2, 2), bool)))
        for s in samples
    ]
    scores = maps.max(axis=(1, 2))
    write_grid(tmp_path / "small.png", samples, maps, scores, per_type=None)
    write_grid(tmp_path / "large.png", large, maps, scores, per_type=None)
    small, drawn = cv2.imread(str(tmp_path / "small.png")), cv2.imread(str(tmp_path / "large.png"))
    assert drawn.shape == small.shape
    assert red_pixels(drawn) == pytest.approx(red_pixels(small), rel=0.05)
