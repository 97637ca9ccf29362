"""From engine outputs to a verdict: ``fail`` at or above the threshold, ``error`` for invalid outputs, and the
regions of the map above the pixel threshold in frame coordinates."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.sidecar import FrameSpec, Sidecar


class ThresholdError(Exception):
    """No usable threshold for an artefact."""


@dataclass(frozen=True)
class Thresholds:
    """Image-score and pixel thresholds, and where they came from."""

    score: float
    pixel: float
    origin: str  # "calibration" or "command line"

    @classmethod
    def resolve(cls, sidecar: Sidecar, score: float | None, pixel: float | None) -> Thresholds:
        """The command line's values, else the sidecar's calibration; refuse to judge with neither."""
        calibration = sidecar.calibration or {}
        if calibration and calibration.get("engine_sha256") != sidecar.sha256:
            raise ThresholdError(
                "the sidecar's calibration was made for another artefact (engine_sha256 differs): calibrate this "
                "engine again with edge-calibrate"
            )
        if score is None and "threshold" not in calibration:
            raise ThresholdError(
                "the engine has no calibrated threshold: run edge-calibrate on it, or pass --threshold"
            )
        chosen = score if score is not None else float(calibration["threshold"])
        pixel_value = pixel if pixel is not None else float(calibration.get("pixel_threshold", chosen))
        for name, value in (("threshold", chosen), ("pixel threshold", pixel_value)):
            problem = sidecar.score.check_threshold(name, value)
            if problem:
                raise ThresholdError(problem)
        return cls(chosen, pixel_value, "command line" if score is not None else "calibration")


def regions(anomaly_map: np.ndarray, pixel_threshold: float, frame: FrameSpec, limit: int = 10) -> list[dict]:
    """Connected areas of ``anomaly_map`` (``h×w``, over the ROI) at or above ``pixel_threshold``, as boxes in
    frame pixels with their area (frame pixels) and peak value, highest peak first (``limit`` of them)."""
    amap = np.asarray(anomaly_map, dtype=np.float32)
    over = amap >= pixel_threshold
    count, labels = cv2.connectedComponents(over.view(np.uint8), connectivity=8)
    if count <= 1:
        return []
    # Each area's peak is one of the map's local maxima (its neighbours are in the area, so not higher, or below
    # the threshold): a few pixels to take maxima over instead of the whole map.
    summits = over & (amap >= cv2.dilate(amap, None))
    peaks = np.full(count, -np.inf, np.float32)  # label 0, the background, stays at -inf
    np.maximum.at(peaks, labels[summits], amap[summits])
    x0, y0, w, h = frame.region
    sx, sy = w / amap.shape[1], h / amap.shape[0]
    found = []
    for label in np.argsort(-peaks[1:], kind="stable")[:limit] + 1:
        area = (labels == int(label)).view(np.uint8)  # only the areas reported are measured
        left, top, width, height = cv2.boundingRect(area)
        found.append(
            {
                "x": int(x0 + left * sx),
                "y": int(y0 + top * sy),
                "w": max(1, round(width * sx)),
                "h": max(1, round(height * sy)),
                "area": round(cv2.countNonZero(area) * sx * sy),
                "peak": round(float(peaks[label]), 4),
            }
        )
    return found


def judge(
    score: float, anomaly_map: np.ndarray, thresholds: Thresholds, frame: FrameSpec
) -> tuple[str, str | None, list[dict]]:
    """``(verdict, reason, regions)`` for one frame's outputs."""
    if not math.isfinite(score) or not math.isfinite(float(anomaly_map.max()) - float(anomaly_map.min())):
        # max and min carry a NaN or an infinity through: no boolean map of the frame's size is made
        return "error", "invalid_output", []
    if score >= thresholds.score:
        return "fail", None, regions(anomaly_map, thresholds.pixel, frame)
    return "pass", None, []
