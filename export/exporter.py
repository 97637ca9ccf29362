"""``edge-export``: a checkpoint → the artefact the line runs (ONNX, or a torch.export program), with sidecar."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import onnx
import torch

import edge
from edge.frames import frames_from_images
from edge.sidecar import FrameSpec, ScoreSpec, Sidecar, sha256_file, write_sidecar
from export.checkpoint import load_model
from export.errors import UserError
from export.graph.deployable import DeployableGraph
from export.graph.precision import compare_layers, format_report
from export.models.base import AnomalyModel

log = logging.getLogger(__name__)

FORMATS = ("onnx", "pt2")
OPSET = 18


def build_deployed(checkpoint: Path, frame: FrameSpec, precision: str) -> tuple[DeployableGraph, AnomalyModel, dict]:
    """The deployable graph of a checkpoint for ``frame`` at ``precision`` on the CPU, the model as trained, and
    the checkpoint's contents."""
    model, payload = load_model(checkpoint, "cpu")
    return DeployableGraph(model, frame, precision).eval(), model, payload


def _batch_dims(frame: FrameSpec) -> tuple[torch.Tensor, dict | None]:
    """An example input and torch.export's dynamic batch dimension (none when the batch is fixed at 1)."""
    batch = min(2, frame.max_batch)
    example = torch.zeros((batch, *frame.frame_shape()), dtype=torch.uint8)
    if frame.max_batch == 1:
        return example, None
    return example, {"frames": {0: torch.export.Dim("batch", min=1, max=frame.max_batch)}}


def check_fp16(model: AnomalyModel, fp16: DeployableGraph, frame: FrameSpec, out: Path) -> dict:
    """Compare every layer of the FP16 graph with its FP32 twin on the good images the model carries, made into
    frames; write the report next to the artefact and refuse an FP16 graph with a layer out of range."""
    fp32 = DeployableGraph(model, frame, "fp32").eval()
    images = model.example_images()
    if images is None:
        raise UserError(f"{type(model).__name__} carries no good images to check FP16 on: export with --precision fp32")
    rows = compare_layers(fp32, fp16, torch.from_numpy(frames_from_images(list(images[:8]), frame)))
    report = out.with_name(out.name + ".precision.txt")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(format_report(rows) + "\n", encoding="utf-8")
    overflowing = [r.name for r in rows if r.overflows]
    if overflowing:
        raise UserError(
            f"FP16 leaves the range in {len(overflowing)} layers ({', '.join(overflowing[:5])}; see {report}): "
            "export with --precision fp32"
        )
    return {"fp16_max_relative_error": max(r.relative_error for r in rows), "fp16_report": report.name}


def export_artefact(
    checkpoint: Path, out: Path, frame: FrameSpec, precision: str = "fp16", artefact_format: str = "onnx"
) -> Sidecar:
    """Write the artefact and its sidecar; returns the sidecar."""
    if artefact_format not in FORMATS:
        raise UserError(f"--format {artefact_format}: use one of {', '.join(FORMATS)}")
    suffix = "." + artefact_format
    out = Path(out)
    if out.suffix != suffix:
        raise UserError(f"--out {out}: a {artefact_format} artefact must end in {suffix}")
    deployed, model, payload = build_deployed(checkpoint, frame, precision)
    precision_check = check_fp16(model, deployed, frame, out) if precision == "fp16" else {}
    example, dynamic = _batch_dims(frame)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad():
        if artefact_format == "onnx":
            torch.onnx.export(
                deployed,
                (example,),
                str(tmp),
                input_names=["frames"],
                output_names=["score", "anomaly_map"],
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                dynamic_shapes=dynamic,
                verbose=False,
            )
            onnx.checker.check_model(str(tmp), full_check=True)
        else:
            program = torch.export.export(deployed, (example,), dynamic_shapes=dynamic)
            torch.export.save(program, str(tmp))
    tmp.replace(out)
    config = payload["config"]
    size = config["image_size"]
    side = size // deployed.to_frame.factor
    map_dtype = "float16" if precision == "fp16" else "float32"
    sidecar = Sidecar(
        model=payload["model"],
        artefact_format=artefact_format,
        precision=precision,
        frame=frame,
        outputs={
            "score": {"shape": [-1], "dtype": "float32"},
            "anomaly_map": {"shape": [-1, 1, side, side], "dtype": map_dtype},
        },
        model_size=size,
        score=ScoreSpec(kind=model.score_kind, head=deployed.score.kind),
        model_details=model.details(),
        source={"path": Path(checkpoint).name, "sha256": sha256_file(Path(checkpoint))},
        training={
            **{k: v for k, v in payload.get("training", {}).items() if k != "loss_curve"},
            "metrics": payload.get("metrics", {}),
        },
        build={
            "exporter": f"torch {torch.__version__}, onnx opset {OPSET}" if artefact_format == "onnx" else "",
            **deployed.model.export_info(),
            **precision_check,
        },
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        software_version=edge.__version__,
    )
    write_sidecar(out, sidecar)
    log.info("wrote %s (%s, %s) and its sidecar", out, artefact_format, precision)
    return sidecar
