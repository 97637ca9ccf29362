"""A small anomaly model built without torch, so the line-side tests run where torch is not installed.

It is a graph of the shape ``edge-export`` writes (uint8 ``frames`` → Cast first → ``score`` B and
``anomaly_map`` B×1×S×S in (0, 1)) made with ``onnx.helper``, with its sidecar written by :mod:`edge.sidecar`.
Its "memory" is the colour distribution of the good training images: a pixel's anomaly is how far its colour lies
from the good images' mean, in their standard deviations, squashed by a sigmoid; the image score is the mean of
the 100 highest pixels, as MemSeg's. It stands in for an exported MemSeg only where torch is absent.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import edge
from edge.sidecar import FrameSpec, Sidecar, write_sidecar

OPSET = 17
IR_VERSION = 8  # opset 17's; ONNX Runtime for Python 3.10 (1.23) reads up to IR 11
TOP_K = 100


def colour_distance(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per-pixel distance of ``images`` (N×H×W×C float) from the colour ``mean``, in standard deviations."""
    return np.sqrt((((images - mean) / std) ** 2).mean(axis=-1))


def good_statistics(good: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Colour mean and standard deviation of the good images (N×h×w×C uint8 crops, resized to ``size``), and
    the sigmoid's centre and width: the 99th percentile of their distances and its spread above the median."""
    images = np.stack([cv2.resize(g, (size, size), interpolation=cv2.INTER_LINEAR) for g in good]).astype(np.float32)
    images = images.reshape(*images.shape[:3], -1)
    mean, std = images.mean(axis=(0, 1, 2)), images.std(axis=(0, 1, 2)) + 1e-3
    distances = colour_distance(images, mean, std)
    centre, median = float(np.quantile(distances, 0.99)), float(np.median(distances))
    return mean, std, centre, max(centre - median, 1e-3)


def colour_graph(frame: FrameSpec, size: int, mean: np.ndarray, std: np.ndarray, centre: float, width: float):
    """The ONNX model: crop the ROI, resize to ``size``, colour distance, sigmoid, top-k mean."""
    x, y, w, h = frame.region
    constants = {
        "roi_starts": np.array([y, x], np.int64),
        "roi_ends": np.array([y + h, x + w], np.int64),
        "roi_axes": np.array([1, 2], np.int64),
        "channel_axis": np.array([3], np.int64),
        "map_size": np.array([size, size], np.int64),
        "mean": mean.reshape(1, -1, 1, 1).astype(np.float32),
        "std": std.reshape(1, -1, 1, 1).astype(np.float32),
        "centre": np.array(centre, np.float32),
        "gain": np.array(1.0 / width, np.float32),
        "flat": np.array([0, -1], np.int64),
        "k": np.array([min(TOP_K, size * size)], np.int64),
    }
    nodes = [helper.make_node("Cast", ["frames"], ["pixels"], to=TensorProto.FLOAT)]
    channels_last = "pixels"
    if frame.channels == 1:
        nodes.append(helper.make_node("Unsqueeze", ["pixels", "channel_axis"], ["pixels_hwc"]))
        channels_last = "pixels_hwc"
    nodes += [
        helper.make_node("Slice", [channels_last, "roi_starts", "roi_ends", "roi_axes"], ["region"]),
        helper.make_node("Transpose", ["region"], ["planar"], perm=[0, 3, 1, 2]),
        helper.make_node("Shape", ["planar"], ["batch_channels"], start=0, end=2),
        helper.make_node("Concat", ["batch_channels", "map_size"], ["sizes"], axis=0),
        helper.make_node("Resize", ["planar", "", "", "sizes"], ["resized"], mode="linear"),
        helper.make_node("Sub", ["resized", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["z"]),
        helper.make_node("Mul", ["z", "z"], ["z2"]),
        helper.make_node("ReduceMean", ["z2"], ["d2"], axes=[1], keepdims=1),
        helper.make_node("Sqrt", ["d2"], ["distance"]),
        helper.make_node("Sub", ["distance", "centre"], ["above"]),
        helper.make_node("Mul", ["above", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["anomaly_map"]),
        helper.make_node("Reshape", ["anomaly_map", "flat"], ["pixels_flat"]),
        helper.make_node("TopK", ["pixels_flat", "k"], ["top", "top_index"], axis=1),
        helper.make_node("ReduceMean", ["top"], ["score"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "colour_model",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", *frame.frame_shape()])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", 1, size, size]),
        ],
        initializer=[numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def write_colour_model(good_folder: Path, out: Path, frame: FrameSpec, size: int = 64) -> Path:
    """Fit the colour model on the good images in ``good_folder`` (frames of ``frame``'s size), write it to
    ``out`` (``.onnx``) with its sidecar, and return ``out``."""
    good = []
    for path in sorted(Path(good_folder).glob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if frame.channels == 1 else cv2.IMREAD_COLOR)
        if frame.pixel_format == "rgb8":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        x, y, w, h = frame.region
        good.append(image[y : y + h, x : x + w])
    mean, std, centre, width = good_statistics(good, size)
    out = Path(out)
    onnx.save(colour_graph(frame, size, mean, std, centre, width), str(out))
    sidecar = Sidecar(
        model="colour-distance",
        artefact_format="onnx",
        precision="fp32",
        frame=frame,
        outputs={
            "score": {"shape": [-1], "dtype": "float32"},
            "anomaly_map": {"shape": [-1, 1, size, size], "dtype": "float32"},
        },
        model_size=size,
        model_details={"good_images": len(good)},
        source={"path": Path(good_folder).name},
        build={"exporter": f"onnx.helper, opset {OPSET}"},
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        software_version=edge.__version__,
    )
    write_sidecar(out, sidecar)
    return out
