"""Reject records an engineer can use, and the one colour scale every heatmap picture uses.

A record is a PNG (the frame as captured, the anomaly map over it on the threshold scale, the region boxes, a
caption) and the verdict as JSON next to it; the scale puts the pixel threshold at its middle for probability maps
and unbounded distance maps alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from edge.engines import open_engine
from edge.heatmap import THRESHOLD_COLOURS, blend, colour_map, display_values
from edge.sidecar import FrameSpec
from edge.sinks import PANEL_SIZE, RejectStore, frame_path, reject_picture, reject_pictures
from tests.test_runtime import SCHEMA, free_endpoint, offline_verdicts, run_in_process


def test_the_scale_puts_the_threshold_in_the_middle_for_probabilities_and_distances() -> None:
    probabilities = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.9], np.float32)
    assert display_values(probabilities, 0.2).tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 1.0])
    distances = np.array([0.0, 5.0, 10.0, 15.0, 40.0], np.float32)  # unbounded: never clipped to [0, 1] first
    assert display_values(distances, 10.0).tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert display_values(np.array([np.nan, 3.0]), 1.0).tolist() == [0.0, 1.0]
    assert display_values(distances, 0.0).min() == 1.0  # a threshold of 0: every pixel is over it


def test_red_means_over_the_pixel_threshold() -> None:
    threshold = 7.5
    values = np.linspace(0.0, 30.0, 3001, dtype=np.float32)
    colours = colour_map(values[None], threshold)[0].astype(int)
    red = colours[:, 0] > colours[:, 2]
    assert (red == (values >= threshold)).all()
    assert tuple(THRESHOLD_COLOURS[128]) == tuple(colour_map(np.array([[threshold]]), threshold)[0, 0])


def grey_frame_with_defect(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    frame = np.full((size, size), 128, np.uint8)
    frame[::8] = 60  # a pattern, so the frame can be found in the picture
    distances = np.zeros((size // 2, size // 2), np.float32)
    distances[8:16, 4:20] = 25.0  # a distance map: 25 is 2.5 times the pixel threshold 10
    return frame, distances


def test_a_distance_map_over_threshold_is_red_in_the_picture_and_the_rest_is_not() -> None:
    frame, distances = grey_frame_with_defect()
    verdict = {
        "verdict": "fail",
        "station": "line3",
        "seq": 7,
        "frame_id": 41,
        "time": "2026-11-24T10:00:00.000Z",
        "score": 24.0,
        "threshold": 12.0,
        "pixel_threshold": 10.0,
        "regions": [],
        "camera": "basler0",
        "model": "sha256:" + "0" * 64,
        "reason": None,
    }
    picture = reject_picture(verdict, frame, distances, FrameSpec(64, 64, "mono8")).astype(int)
    k = round(PANEL_SIZE / 64)
    right = picture[:, picture.shape[1] // 2 :]
    red = (right[..., 0] > right[..., 2] + 40).sum()
    assert red == pytest.approx(8 * 2 * 16 * 2 * k * k, rel=0.15)  # the defect's area on the enlarged frame
    over_blue = blend(np.full((4, 4, 3), 128, np.uint8), np.zeros((2, 2)), 10.0).astype(int)[0, 0]
    assert over_blue[2] > over_blue[0]  # below the threshold the overlay is blue


def test_a_reject_record_has_the_frame_the_map_the_boxes_a_caption_and_the_verdict(
    onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    scores = sorted(score for _, score in offline_verdicts(onnx_engine, part_folder, 0.5).values())
    threshold = scores[len(scores) // 2]
    store = RejectStore(tmp_path / "rejects", FrameSpec(64, 64, "rgb8"), max_files=100)
    _, messages = run_in_process(
        open_engine(onnx_engine), part_folder, free_endpoint(), [store], threshold=threshold, queue_size=64
    )
    store.close(timeout=30)
    failed = {p["seq"]: p for k, p in messages if k == "verdict" and p["verdict"] == "fail"}
    pictures = sorted(reject_pictures(tmp_path / "rejects"))
    assert len(pictures) == len(failed) == store.saved > 0
    names = sorted(part_folder.glob("*.png"))
    k = round(PANEL_SIZE / 64)
    for path in pictures:
        record = json.loads(path.with_suffix(".json").read_text())
        jsonschema.validate(record, SCHEMA)
        assert record == failed[record["seq"]]
        picture = cv2.imread(str(path))
        height, width = picture.shape[:2]
        assert width > 2 * 64 * k and 64 * k + 80 < height < 2 * 64 * k  # two panels and a caption below
        captured = cv2.imread(str(names[record["frame_id"]]))
        enlarged = cv2.resize(captured, (64 * k, 64 * k), interpolation=cv2.INTER_NEAREST)
        _, _, (x, y), _ = cv2.minMaxLoc(cv2.matchTemplate(picture, enlarged, cv2.TM_SQDIFF))
        assert (picture[y : y + 64 * k, x : x + 64 * k] == enlarged).all()  # the frame's own pixels, exactly
        assert (cv2.imread(str(frame_path(path))) == captured).all()  # the frame as captured, for a review
        green_box = (picture[..., 1] == 255) & (picture[..., 0] == 0) & (picture[..., 2] == 0)
        assert green_box.any() == bool(record["regions"])
        assert (picture[64 * k + 40 :] > 200).any()  # caption text below the panels
