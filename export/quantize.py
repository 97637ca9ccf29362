"""INT8 with calibration on good parts: an FP32 ``edge-export`` ONNX → an explicitly quantised (QDQ) ONNX.

ONNX Runtime's static quantisation writes QuantizeLinear/DequantizeLinear pairs around the layers it quantises;
ONNX Runtime (VNNI/AMX kernels) and OpenVINO read such a graph and run those layers in INT8. Weights are INT8 per
output channel (symmetric). Activations are UINT8 with a zero point (asymmetric): OpenVINO 2026.4 computes wrong
values for symmetric INT8 activations that meet at a Concat (measured on MemSeg's decoder), so the symmetric
form TensorRT requires is not made here.

**Activation ranges** are the largest values (MinMax) seen when the FP32 graph runs on the good images turned
into the camera's frames (:func:`edge.frames.frames_from_images`), and on the same images with simulated defects
(the training's simulation, :mod:`export.data.simulation`). Good images alone are not enough: after the memory
comparison a defect's activations are orders of magnitude larger than a good part's (MemSeg's decoder: ~4,500
against ~3), and ranges from good parts clip them, pulling defect scores down towards the threshold (measured on
the brick demo: 16 of 60 defects below 0.5 with good-only ranges, 1 with the simulated defects added).

**Only the layers that carry the arithmetic are quantised**: convolutions and matrix products with a learned
(constant) weight, plus the layers that merely pass their INT8 values on (Relu, Add, MaxPool, Concat, Resize)
when every input comes from a quantised layer. A memory bank is a constant too: a matrix product whose result
reaches a choice among memory items (Softmax, ArgMin, ReduceMin, TopK, …) before any other layer, or that reads
weights made by a Softmax, is a memory lookup and stays FP32. Everything else stays FP32, and why:

- the frame preprocessing (Cast, crop, resize, normalisation): it is cheap and sets every later value;
- the memory lookup: the distances between features and memory samples (Sub, Abs, ReduceSum, or a MatMul
  between two activations), the choice of the nearest sample (ArgMin, ReduceMin) and its gathering (Gather,
  GatherND): sums of many small differences separate memory samples by less than one 8-bit step, so a quantised
  lookup would pick another sample and change the map;
- norms, averages and attention weights (ReduceMean, ReduceL2, LayerNormalization, Mul, Sigmoid, …) and
  Softmax: they squash values into [0, 1], where 256 steps are too coarse for a threshold;
- TopK and the score: the score is what is compared with the threshold; an 8-bit step there would move verdicts
  directly.

Whether that is enough is measured, never assumed: ``edge-export --precision int8`` runs the fidelity gate
(:mod:`export.gate`) and refuses an artefact whose verdicts or AUROC move.
"""

from __future__ import annotations

import collections
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edge.frames import frames_from_images
from edge.sidecar import FrameSpec, Sidecar, write_sidecar
from export.data.images import list_images, read_image
from export.data.simulation import DefectSimulator
from export.errors import DataError, UserError
from export.exporter import export_artefact

log = logging.getLogger(__name__)

COMPUTE_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
WEIGHTED_OP_TYPES = ("MatMul", "Gemm")  # layers only with a constant weight that is not a memory (below)
LOOKUP_OP_TYPES = ("Softmax", "ArgMin", "ArgMax", "ReduceMin", "ReduceMax", "TopK")  # choosing among memory items
PASS_ON_OP_TYPES = ("Relu", "Add", "MaxPool", "Concat", "Resize")  # INT8 in, INT8 out when every input is INT8
MIN_CALIBRATION_IMAGES = 8
MAX_CALIBRATION_IMAGES = 200
SEED = 0


def calibration_frames(folder: Path, frame: FrameSpec) -> np.ndarray:
    """The good images of ``folder`` (evenly chosen, at most :data:`MAX_CALIBRATION_IMAGES`) and each again with a
    simulated defect, as the engine's frames (``B×…`` uint8)."""
    paths = list_images(Path(folder))
    if len(paths) < MIN_CALIBRATION_IMAGES:
        raise DataError(
            f"{folder} holds {len(paths)} images: INT8 calibration needs at least {MIN_CALIBRATION_IMAGES} pictures "
            "of good parts (100 or more cover the line's variation better)"
        )
    step = max(1, len(paths) // MAX_CALIBRATION_IMAGES)
    images = [read_image(p) for p in paths[::step][:MAX_CALIBRATION_IMAGES]]
    simulator, rng = DefectSimulator(), np.random.default_rng(SEED)
    defective = [simulator(image, rng)[0] for image in images]
    return frames_from_images(images + defective, frame)


def memory_lookups(model: onnx.ModelProto) -> set[str]:
    """Matrix products that compare with or read from a memory: their output reaches a choice among memory items
    (Softmax, ArgMin, ReduceMin, TopK, …) before any other layer, or they read weights made by a Softmax. A memory
    bank is a constant like a weight, so the graph's shape, not the constant, tells them apart."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producers = {o: n for n in model.graph.node for o in n.output}

    def reaches_lookup(tensor: str, seen: set[str]) -> bool:
        for node in consumers.get(tensor, []):
            if node.name in seen or node.op_type in COMPUTE_OP_TYPES:
                continue
            seen.add(node.name)
            if node.op_type in LOOKUP_OP_TYPES or any(reaches_lookup(o, seen) for o in node.output):
                return True
        return False

    def made_by_softmax(tensor: str, seen: set[str]) -> bool:
        node = producers.get(tensor)
        if node is None or node.name in seen or node.op_type in COMPUTE_OP_TYPES:
            return False
        seen.add(node.name)
        return node.op_type == "Softmax" or any(made_by_softmax(i, seen) for i in node.input)

    lookups = set()
    for node in model.graph.node:
        memory = made_by_softmax(node.input[0], set()) or reaches_lookup(node.output[0], set())
        if node.op_type in WEIGHTED_OP_TYPES and memory:
            lookups.add(node.name)
    return lookups


def quantised_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes to quantise, in graph order: every convolution, matrix products whose second input is a learned
    weight (not a memory), and the pass-on layers whose inputs all come from nodes already chosen."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    lookups = memory_lookups(model)
    chosen: list[str] = []
    int8_tensors: set[str] = set()
    for node in model.graph.node:  # ONNX keeps nodes in topological order
        if node.op_type in COMPUTE_OP_TYPES:
            weighted = len(node.input) > 1 and node.input[1] in constants and node.name not in lookups
            take = weighted or node.op_type not in WEIGHTED_OP_TYPES
        else:
            data = [name for name in node.input if name and name not in constants]
            take = node.op_type in PASS_ON_OP_TYPES and bool(data) and all(name in int8_tensors for name in data)
        if take:
            chosen.append(node.name)
            int8_tensors.update(node.output)
    return chosen


class _FrameReader:
    """ONNX Runtime's calibration data reader: one frame at a time, as the line runs at batch 1."""

    def __init__(self, frames: np.ndarray) -> None:
        self._frames = iter(frames)

    def get_next(self) -> dict | None:
        frame = next(self._frames, None)
        return None if frame is None else {"frames": frame[None]}


class _NoPreprocessingAdvice(logging.Filter):
    """ONNX Runtime's quantiser suggests its shape-inference pre-pass; the exporter's graph is already inferred."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_onnx(fp32: Path, out: Path, frames: np.ndarray, symmetric: bool = False) -> dict:
    """Write the QDQ INT8 twin of the FP32 ONNX ``fp32`` to ``out``, calibrated on ``frames``; returns what was
    quantised and what stayed FP32 (for the sidecar). ``symmetric``: INT8 activations with zero point 0, the only
    form TensorRT reads (for ONNX Runtime and TensorRT; OpenVINO 2026.4 computes it wrongly at a Concat)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(fp32))
    nodes = quantised_nodes(model)
    compute = [n for n in model.graph.node if n.name in set(nodes) and n.op_type in COMPUTE_OP_TYPES]
    if not compute:
        raise UserError(f"{fp32.name} has no convolutions or weighted matrix products to quantise: use fp32")
    advice = _NoPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        quantize_static(
            model,
            str(out),
            _FrameReader(frames),
            quant_format=QuantFormat.QDQ,
            nodes_to_quantize=nodes,
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # TensorRT reads INT8 and no INT32: biases stay FP32 in its form
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": not symmetric},
        )
    finally:
        logging.getLogger().removeFilter(advice)
    onnx.checker.check_model(str(out), full_check=True)
    chosen = set(nodes)

    def count(keep) -> dict:
        return dict(sorted(collections.Counter(n.op_type for n in model.graph.node if keep(n.name)).items()))

    activations = "INT8 symmetric (TensorRT)" if symmetric else "UINT8"
    return {
        "quantisation": f"QDQ: weights INT8 per channel, activations {activations} (MinMax on good and "
        "simulated-defect frames)",
        "symmetric_activations": symmetric,
        "calibration_frames": int(len(frames)),
        "int8_layers": len(compute),
        "int8_ops": count(lambda name: name in chosen),
        "fp32_ops": count(lambda name: name not in chosen),
    }


def export_int8(
    checkpoint: Path, out: Path, frame: FrameSpec, calibration_images: Path, symmetric: bool = False
) -> Sidecar:
    """Export the FP32 graph to a temporary file, quantise it to ``out`` on the good images of
    ``calibration_images`` (``symmetric`` activations for TensorRT), and write the sidecar (precision ``int8``)."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise UserError(f"--out {out}: an INT8 artefact is an ONNX file and must end in .onnx")
    frames = calibration_frames(calibration_images, frame)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / out.name
        sidecar = export_artefact(checkpoint, fp32, frame, precision="fp32")
        log.info("quantising to INT8, ranges from %d frames (good and simulated defects)", len(frames))
        out.parent.mkdir(parents=True, exist_ok=True)
        sidecar.build |= quantize_onnx(fp32, out, frames, symmetric)
    sidecar.precision = "int8"
    write_sidecar(out, sidecar)
    log.info("wrote %s (onnx, int8) and its sidecar", out)
    return sidecar
