"""Making camera-like frames from ordinary images, for tools that feed pictures to an engine.

Verification and calibration read folders of images; an engine takes frames exactly as its camera delivers them
(:class:`~edge.sidecar.FrameSpec`). This places each image in the engine's region of interest at the ROI's size
and converts it to the pixel format, so the engine sees the picture the way it would see the part.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.sidecar import FrameSpec


def frame_from_image(image: np.ndarray, frame: FrameSpec) -> np.ndarray:
    """RGB uint8 ``H×W×3`` image → one frame of ``frame``'s shape and pixel format (outside the ROI: black)."""
    x, y, w, h = frame.region
    if image.shape[:2] != (h, w):
        shrinking = image.shape[0] >= h and image.shape[1] >= w
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if frame.pixel_format == "mono8":
        region = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    elif frame.pixel_format == "bgr8":
        region = image[..., ::-1]
    else:
        region = image
    out = np.zeros(frame.frame_shape(), dtype=np.uint8)
    out[y : y + h, x : x + w] = region
    return out


def camera_frame(image: np.ndarray, frame: FrameSpec) -> np.ndarray:
    """A picture from the station's camera as the engine's frame: the whole frame, or just the ROI's size.

    Raises ValueError naming both sizes for a picture of any other size (resizing it would calibrate on
    something the camera never delivers).
    """
    x, y, w, h = frame.region
    if image.shape[:2] == (frame.height, frame.width):
        return frame_from_image(image, FrameSpec(frame.width, frame.height, frame.pixel_format))
    if image.shape[:2] == (h, w):
        return frame_from_image(image, frame)
    roi = f" or the ROI's {w}x{h}" if frame.roi is not None else ""
    raise ValueError(
        f"image is {image.shape[1]}x{image.shape[0]}, the engine takes {frame.width}x{frame.height} frames{roi}: "
        "use pictures from the station's camera"
    )


def frames_from_images(images: list[np.ndarray], frame: FrameSpec) -> np.ndarray:
    """A ``B×…`` uint8 batch of frames made from RGB images."""
    return np.stack([frame_from_image(image, frame) for image in images])
