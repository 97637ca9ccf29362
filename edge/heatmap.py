"""How an anomaly map is shown: one colour scale, fixed to the pixel threshold, for every picture the product makes.

A map is shown as ``clip(map / (2 · pixel_threshold), 0, 1)``: the pixel threshold sits at the middle of the scale
and twice the threshold at its top, whatever the map's units (probabilities in [0, 1] or unbounded non-negative
distances). The colours change at the middle: blues below the threshold, reds at and above it, so red always
means "over the pixel threshold". Reject images, the heatmap topic, ``edge-eval``'s grid and the calibration
report all use these functions.
"""

from __future__ import annotations

import cv2
import numpy as np


def display_values(anomaly_map: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """``clip(map / (2 · pixel_threshold), 0, 1)`` as float32: 0.5 is the threshold; NaN shows as 0. A threshold
    of 0 or less puts every pixel over it (1.0)."""
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if pixel_threshold <= 0:
        return np.ones_like(amap)
    values = amap / np.float32(2.0 * pixel_threshold)
    return np.clip(np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _threshold_colours() -> np.ndarray:
    """256 RGB colours: dark to light blue below the middle (index 128 = the threshold), red to dark red from it."""
    stops = [(0, (20, 30, 110)), (127, (150, 205, 255)), (128, (255, 40, 0)), (255, (140, 0, 0))]
    lut = np.zeros((256, 3), np.float32)
    for (i0, c0), (i1, c1) in zip(stops, stops[1:], strict=False):
        t = np.linspace(0.0, 1.0, i1 - i0 + 1)[:, None]
        lut[i0 : i1 + 1] = (1 - t) * np.asarray(c0, np.float32) + t * np.asarray(c1, np.float32)
    return lut.round().astype(np.uint8)


THRESHOLD_COLOURS = _threshold_colours()  # RGB, indexed by round(display value · 255)


def colour_map(anomaly_map: np.ndarray, pixel_threshold: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """The map as an RGB uint8 image on the threshold scale, resized to ``size`` (width, height) if given."""
    return THRESHOLD_COLOURS[_scale_index(anomaly_map, pixel_threshold, size)]


def _scale_index(anomaly_map: np.ndarray, pixel_threshold: float, size: tuple[int, int] | None) -> np.ndarray:
    """Each pixel's index into :data:`THRESHOLD_COLOURS` (128 and above: over the threshold), at ``size``."""
    values = display_values(anomaly_map, pixel_threshold)
    if size is not None and values.shape[::-1] != tuple(size):
        values = cv2.resize(values, size, interpolation=cv2.INTER_LINEAR)
    return np.rint(values * 255).astype(np.uint8)


def blend(image_rgb: np.ndarray, anomaly_map: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """An RGB uint8 image with the map (resized to it) over it on the threshold scale: 40 % colour below the
    threshold, so the part shows through, 65 % at and above it, so what is over stands out."""
    index = _scale_index(anomaly_map, pixel_threshold, image_rgb.shape[1::-1])
    alpha = np.where(index >= 128, np.float32(0.65), np.float32(0.4))[..., None]
    mixed = (1.0 - alpha) * image_rgb.astype(np.float32) + alpha * THRESHOLD_COLOURS[index].astype(np.float32)
    return np.rint(mixed).astype(np.uint8)


def colour_bar(width: int, height: int) -> np.ndarray:
    """A horizontal RGB strip of the scale from 0 (left) through the threshold (middle) to twice it (right)."""
    ramp = THRESHOLD_COLOURS[np.rint(np.linspace(0, 255, width)).astype(np.uint8)]
    return np.repeat(ramp[None], height, axis=0)
