"""The fidelity gate of a reduced-precision export: an FP16 or INT8 artefact is kept only if it judges parts as
the FP32 model does.

``edge-export --precision fp16|int8`` writes the artefact into a staging folder next to ``--out``, runs it and
the checkpoint (the FP32 reference) over the images of ``--verify-data`` (an MVTec-style test set: verdicts, and
image and pixel AUROC) and compares them (:func:`export.verify.compare`) on every CPU runtime that runs it: ONNX
Runtime, and OpenVINO where it is installed, for an ``.onnx``. If every comparison passes, the artefact and its
sidecar, with the numbers under ``build.fidelity``, move to ``--out``. Otherwise nothing is written and the
error gives the numbers; ``--force`` writes it anyway, marked ``passed: false`` in the sidecar.

Verdicts are compared at ``--threshold``, or else at the threshold ``edge-calibrate`` would give the FP32 reference
on the good images of ``--calibration-images`` for ``--target-false-reject``, or else, for probability scores, 0.5.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from pathlib import Path

import numpy as np

from edge.engines import EngineError, open_engine
from edge.false_rejects import CalibrationError, false_reject_threshold
from edge.frames import frames_from_images
from edge.sidecar import FrameSpec, Sidecar, read_sidecar, write_sidecar
from export.data.images import list_images, read_image
from export.errors import UserError
from export.exporter import export_artefact
from export.quantize import export_int8
from export.verify import (
    DEFAULT_THRESHOLD,
    CheckpointEngine,
    Comparison,
    VerificationSet,
    compare,
    map_size,
    run_all,
    verification_set,
)

log = logging.getLogger(__name__)

REDUCED_PRECISIONS = ("fp16", "int8")


def reference_threshold(
    checkpoint: Path, frame: FrameSpec, good_images: Path, target: float, sidecar: Sidecar
) -> float:
    """The threshold ``edge-calibrate`` would choose for the FP32 reference on the good images of ``good_images``."""
    engine = CheckpointEngine(checkpoint, frame)
    frames = frames_from_images([read_image(p) for p in list_images(Path(good_images))], frame)
    scores = run_all(engine, frames).score
    try:
        chosen = false_reject_threshold(scores, target, np.random.default_rng(0), sidecar.score)
    except CalibrationError as exc:
        raise UserError(f"the fidelity gate's threshold: {exc}; or give --threshold") from exc
    return float(chosen["threshold"])


def runtimes(artefact: Path) -> list[str]:
    """The CPU runtimes the gate runs ``artefact`` on: an ``.onnx`` on ONNX Runtime and, if installed, OpenVINO,
    except an INT8 graph with symmetric activations (made for TensorRT), which OpenVINO 2026.4 computes wrongly."""
    if artefact.suffix != ".onnx":
        return ["auto"]
    if read_sidecar(artefact, verify=False).build.get("symmetric_activations"):
        return ["onnxruntime"]
    return ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])


def check_fidelity(
    artefact: Path, checkpoint: Path, images: VerificationSet, threshold: float, cache: Path
) -> list[Comparison]:
    """The artefact against the checkpoint on ``images``, once per runtime."""
    frame = read_sidecar(artefact).frame
    reference = run_all(CheckpointEngine(checkpoint, frame), images.frames)
    results = []
    for backend in runtimes(artefact):
        try:
            cache_dir = cache if backend == "openvino" else None
            engine = open_engine(artefact, backend=backend, cache_dir=cache_dir)
        except EngineError as exc:
            raise UserError(str(exc)) from exc
        candidate = run_all(engine, images.frames)
        results.append(compare(candidate, reference, images, threshold, engine.sidecar.precision, engine.backend))
    return results


def export_checked(
    checkpoint: Path,
    out: Path,
    frame: FrameSpec,
    precision: str,
    artefact_format: str = "onnx",
    calibration_images: Path | None = None,
    verify_data: Path | None = None,
    threshold: float | None = None,
    target_false_reject: float = 0.01,
    force: bool = False,
    target: str = "cpu",
) -> Sidecar:
    """Export ``checkpoint`` to ``out`` at ``precision`` for ``target`` (cpu, gpu); a reduced precision passes the
    fidelity gate first. INT8 for a GPU has symmetric activations, the form TensorRT reads."""
    out = Path(out)
    if precision == "int8" and calibration_images is None:
        raise UserError("--precision int8 needs --calibration-images DIR: pictures of good parts (100 or more)")
    if precision not in REDUCED_PRECISIONS:
        return export_artefact(checkpoint, out, frame, precision, artefact_format)
    if verify_data is None and not force:
        raise UserError(
            f"--precision {precision} needs --verify-data DIR (an MVTec-style test set: DIR/test/good, "
            "DIR/test/<defect>, DIR/ground_truth) to check its verdicts against FP32, or --force to skip the check"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".edge-export-") as staging:
        staged = Path(staging) / out.name
        if precision == "int8":
            sidecar = export_int8(checkpoint, staged, frame, calibration_images, symmetric=target == "gpu")
        else:
            sidecar = export_artefact(checkpoint, staged, frame, precision, artefact_format)
        if verify_data is None:
            log.warning("%s: --force without --verify-data, its verdicts are not checked against FP32", out.name)
        else:
            if threshold is None and calibration_images is not None:
                threshold = reference_threshold(checkpoint, frame, calibration_images, target_false_reject, sidecar)
            images = verification_set(verify_data, frame, map_size(sidecar))
            if threshold is None:
                if not sidecar.score.bounded:
                    raise UserError("this model's scores are distances: give --threshold or --calibration-images")
                threshold = DEFAULT_THRESHOLD
            results = check_fidelity(staged, checkpoint, images, threshold, Path(staging) / "openvino-cache")
            failed = [r for r in results if not r.passed]
            sidecar.build["fidelity"] = [r.to_dict() for r in results]
            write_sidecar(staged, sidecar)
            for result in results:
                log.info("fidelity against FP32: %s", result.summary())
            if failed and not force:
                raise UserError(
                    f"{out.name} is not written: its verdicts or AUROC move against FP32 ("
                    + "; ".join(r.summary() for r in failed)
                    + "). Export fp32, calibrate on more good images, or give --force to write it anyway"
                )
            if failed:
                log.warning("%s written with --force although it fails the fidelity gate", out.name)
        for path in Path(staging).iterdir():
            if path.is_file() and path.name.startswith(out.name):
                path.replace(out.parent / path.name)
    return sidecar
