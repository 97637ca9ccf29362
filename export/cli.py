"""Command-line tools of the offline side: ``edge-dataset``, ``edge-train``, ``edge-eval``, ``edge-export``,
``edge-verify``.

Each prints a clear ``error:`` line and exits with status 2 for problems the user can fix (:mod:`edge.tool`);
never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from edge.tool import missing_extra, run_tool
from export.errors import UserError

#: edge-train's model when none is named: the best on the development sets within the CPU budget (60 s of training,
#: 20 ms a frame at 128 px), and the best reported on the held-out ones (docs/models.md).
DEFAULT_MODEL = "patchcore"


def _run(
    prog: str, body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv, needs=("torch",)
) -> int:
    """Parse ``argv``, check that the train extra's ``needs`` are installed, quieten the libraries' logs and run
    ``body`` as a tool whose user errors are :class:`UserError`; Ctrl-C ends it with status 130."""
    args = parser.parse_args(argv)
    if (refused := missing_extra(prog, "train", needs)) is not None:
        return refused
    logging.basicConfig(level=logging.INFO, format=f"{prog}: %(message)s")
    for noisy in ("onnxscript", "torch", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="no --backbone-weights")  # the logger says it once
    try:
        return run_tool(prog, lambda: body(args), (UserError,))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def dataset_main(argv: Sequence[str] | None = None) -> int:
    """``edge-dataset``: write an MVTec-style dataset cut from a photo of a surface."""
    from export.data.texture_dataset import DEFECT_KINDS, HELD_OUT, ORIENTATIONS, SURFACES, TEXTURES

    parser = argparse.ArgumentParser(
        prog="edge-dataset",
        description="Make an MVTec-style dataset (train/good, test/<defect>, ground_truth/<defect>) from a photo of "
        f"a surface: one shipped with scikit-image ({', '.join(TEXTURES)} for development, {', '.join(HELD_OUT)} "
        f"held out for reporting) or your own. Test defects: {', '.join(DEFECT_KINDS)}.",
    )
    photo = parser.add_mutually_exclusive_group(required=True)
    photo.add_argument("--texture", choices=list(SURFACES), help="a photo shipped with scikit-image")
    photo.add_argument("--photo", type=Path, help="an image file of your own surface (grey or colour)")
    parser.add_argument("--out", required=True, type=Path, help="folder to create (must be new or empty)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--train", type=int, default=200, help="good training images")
    parser.add_argument("--test-good", type=int, default=30)
    parser.add_argument("--test-per-defect", type=int, default=15)
    parser.add_argument(
        "--crop",
        type=int,
        help="side of the window cut from the photo (default: 192 px; 256 and 320 for the "
        "larger hubble_deep_field and retina)",
    )
    parser.add_argument(
        "--defects", default=",".join(DEFECT_KINDS), help="test defect kinds, comma-separated (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="0 for reporting, 1 for validation sets to choose on")
    parser.add_argument(
        "--orientation",
        choices=ORIENTATIONS,
        default="any",
        help="any: each window turned by a multiple of 90° and mirrored at random (a surface fed in any direction); "
        "fixed: as cut from the photo (parts that face the camera one way)",
    )
    parser.add_argument(
        "--contamination",
        type=float,
        default=0.0,
        help="fraction of train/good given a defect of the test kinds (masks under train_contamination/)",
    )

    def body(args: argparse.Namespace) -> int:
        from export.data.texture_dataset import make_texture_dataset

        try:
            summary = make_texture_dataset(
                args.texture or args.photo,
                args.out,
                image_size=args.image_size,
                train=args.train,
                test_good=args.test_good,
                test_per_defect=args.test_per_defect,
                crop=args.crop,
                seed=args.seed,
                contamination=args.contamination,
                defects=[k.strip() for k in args.defects.split(",") if k.strip()],
                orientation=args.orientation,
            )
        except (ValueError, FileExistsError) as exc:
            raise UserError(str(exc)) from exc
        print(json.dumps(summary, indent=2, default=str))
        return 0

    return _run("edge-dataset", body, parser, argv, needs=("skimage",))


def _option_flags(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One flag per field of a model's config or training dataclass (``memory_samples`` → ``--memory-samples``),
    typed and with its default shown."""
    from export.models.registry import option_types

    group = parser.add_argument_group(title)
    types = option_types(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("flag") is False:  # filled by training, not given by users
            continue
        kind = types[f.name]
        flag = "--" + f.name.replace("_", "-")
        text = f.metadata.get("help", "")
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"{text} ({f.default})")
            continue
        group.add_argument(flag, type=kind, default=None, help=f"{text} (default: {f.default})".strip())


def train_main(argv: Sequence[str] | None = None) -> int:
    """``edge-train``: train a registered model on good images and write a checkpoint."""
    from export.models import get_spec, model_names

    argv = list(sys.argv[1:] if argv is None else argv)
    chooser = argparse.ArgumentParser(add_help=False)
    chooser.add_argument("--model", default=DEFAULT_MODEL)
    chosen = chooser.parse_known_args(argv)[0].model
    parser = argparse.ArgumentParser(
        prog="edge-train",
        description="Train an anomaly-detection model on a folder of good images (MVTec layout: DATA/train/good). "
        "Each model has its own options: edge-train --model NAME --help lists them.",
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, choices=model_names(), help=f"which model (default: {DEFAULT_MODEL})"
    )
    parser.add_argument("--data", required=True, type=Path, help="dataset folder holding train/good")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint to write, e.g. memseg.pt")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--reuse",
        nargs="+",
        type=Path,
        default=[],
        metavar="CHECKPOINT",
        help="checkpoints trained before with the same seed: an ensemble takes a member from one whose model and "
        "options are the member's instead of training it again",
    )
    if chosen in model_names():
        spec = get_spec(chosen)
        _option_flags(parser, spec.config, f"{chosen}: the model")
        _option_flags(parser, spec.training, f"{chosen}: training")
    common = {"model", "data", "out", "device", "seed", "no_progress", "reuse"}

    def body(args: argparse.Namespace) -> int:
        from export.train import train

        values = {k: v for k, v in vars(args).items() if k not in common and v is not None}
        summary = train(
            args.model, args.data, args.out, values, args.device, args.seed, not args.no_progress, args.reuse
        )
        for path in sorted(set(map(str, args.reuse)) - set(summary["reused"])):
            print(
                f"edge-train: warning: --reuse {path} was not taken: no part of {args.model} has its model, "
                f"options and seed {args.seed}",
                file=sys.stderr,
            )
        print(json.dumps({k: v for k, v in summary.items() if k != "loss_curve"}, indent=2))
        return 0

    return _run("edge-train", body, parser, argv)


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``edge-eval``: image/pixel AUROC, PRO and F1-max of a checkpoint on DATA/test, as JSON."""
    parser = argparse.ArgumentParser(
        prog="edge-eval",
        description="Evaluate a checkpoint on an MVTec-style test set (test/<defect>, ground_truth/<defect>); "
        "prints JSON metrics and writes a PNG grid of inputs, ground truth and heatmaps.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--grid", type=Path, help="PNG to write (default: next to the checkpoint)")
    parser.add_argument("--all", action="store_true", help="every test image in the grid (default: 3 per type)")

    def body(args: argparse.Namespace) -> int:
        from export.evaluate import evaluate

        grid = args.grid or args.checkpoint.with_name(args.checkpoint.stem + "_eval.png")
        print(json.dumps(evaluate(args.checkpoint, args.data, args.device, grid, args.all), indent=2))
        return 0

    return _run("edge-eval", body, parser, argv)


def _frame_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: write WIDTHxHEIGHT, e.g. 1920x1200") from exc
    return width, height


def _roi(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: write x,y,w,h in frame pixels, e.g. 100,50,800,800") from exc
    return x, y, w, h


def export_main(argv: Sequence[str] | None = None) -> int:
    """``edge-export``: checkpoint → ONNX (or torch.export program) taking raw camera frames, with sidecar."""
    parser = argparse.ArgumentParser(
        prog="edge-export",
        description="Export a checkpoint to the artefact the line runs: the camera's uint8 frame in, the image score "
        "and anomaly map out, with preprocessing, the memory lookup and the score folded into the graph. A sidecar "
        "(ARTEFACT.json) with the input spec, hashes and training metrics is written next to it.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="memseg.onnx (or .pt2 with --format pt2)")
    parser.add_argument("--frame-size", type=_frame_size, help="camera frame WIDTHxHEIGHT (default: model size)")
    parser.add_argument("--pixel-format", default="rgb8", choices=["mono8", "rgb8", "bgr8"])
    parser.add_argument("--roi", type=_roi, help="x,y,w,h of the inspected region inside the frame")
    parser.add_argument("--max-batch", type=int, default=1)
    parser.add_argument(
        "--target",
        default="cpu",
        choices=["cpu", "gpu"],
        help="what runs the artefact; it sets the default precision: cpu (default) fp32, gpu (TensorRT) fp16",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "fp16", "int8"],
        help="fp32, fp16, or int8 (a QDQ ONNX, needs --calibration-images; with --target cpu for ONNX Runtime and "
        "OpenVINO, with --target gpu symmetric activations for TensorRT and ONNX Runtime)",
    )
    parser.add_argument("--format", default="onnx", choices=["onnx", "pt2"], help="pt2: for GPUs without TensorRT")
    gate = parser.add_argument_group("reduced precision (fp16, int8): checked against FP32 before it is written")
    gate.add_argument("--calibration-images", type=Path, help="folder of good parts: INT8 ranges, gate threshold")
    gate.add_argument("--verify-data", type=Path, help="test set (DIR/test/good, DIR/test/<defect>, ground_truth)")
    gate.add_argument("--threshold", type=float, help="score threshold for comparing verdicts (default: calibrated)")
    gate.add_argument("--target-false-reject", type=float, default=0.01, help="for the calibrated threshold")
    gate.add_argument("--force", action="store_true", help="write it even if verdicts or AUROC move")

    def body(args: argparse.Namespace) -> int:
        from edge.sidecar import FrameSpec
        from export.checkpoint import read_checkpoint
        from export.gate import export_checked

        if args.frame_size is None:
            size = read_checkpoint(args.checkpoint)["config"]["image_size"]
            args.frame_size = (size, size)
        try:
            frame = FrameSpec(*args.frame_size, args.pixel_format, args.roi, args.max_batch)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        precision = args.precision or ("fp16" if args.target == "gpu" else "fp32")
        if args.target == "cpu" and precision == "fp16":
            logging.getLogger("edge-export").warning(
                "ONNX Runtime runs an FP16 graph slower on a CPU than FP32: for CPUs export fp32 or int8"
            )
        sidecar = export_checked(
            args.checkpoint,
            args.out,
            frame,
            precision,
            args.format,
            args.calibration_images,
            args.verify_data,
            args.threshold,
            args.target_false_reject,
            args.force,
            args.target,
        )
        print(json.dumps({"artefact": str(args.out), "sha256": sidecar.sha256, "frame": sidecar.frame.__dict__}))
        return 0

    return _run("edge-export", body, parser, argv)


def verify_main(argv: Sequence[str] | None = None) -> int:
    """``edge-verify``: compare two artefacts (or an artefact and its checkpoint) on images; exit 1 if apart."""
    parser = argparse.ArgumentParser(
        prog="edge-verify",
        description="Run two artefacts (.onnx, .plan, .pt2, or a .pt checkpoint as reference) over the same images and "
        "compare anomaly maps, scores and verdicts. Exits 1 beyond tolerance (defaults by the engine's precision).",
    )
    parser.add_argument("--engine", required=True, type=Path, help="the artefact under test")
    parser.add_argument("--reference", required=True, type=Path, help="what it should agree with")
    parser.add_argument("--data", required=True, type=Path, help="image folder (DATA/test/** when present)")
    parser.add_argument("--threshold", type=float, help="score threshold (default: the sidecar's calibration)")
    parser.add_argument("--map-tolerance", type=float)
    parser.add_argument("--score-tolerance", type=float)
    parser.add_argument("--limit", type=int, help="use at most this many images")
    parser.add_argument("--backend", default="auto", help="run the artefact under test on: auto, onnxruntime, openvino")
    parser.add_argument("--inference-precision", choices=["fp32", "bf16"], help="OpenVINO's arithmetic (default fp32)")

    def body(args: argparse.Namespace) -> int:
        from export.verify import verify

        result = verify(
            args.engine,
            args.reference,
            args.data,
            args.threshold,
            args.map_tolerance,
            args.score_tolerance,
            args.limit,
            args.backend,
            args.inference_precision,
        )
        print(json.dumps(result.to_dict(), indent=2))
        return 0 if result.passed else 1

    return _run("edge-verify", body, parser, argv)
