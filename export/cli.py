"""Command-line tools of the offline side: ``edge-dataset``, ``edge-train``, ``edge-eval``.

Each prints a clear ``error:`` line and exits with status 2 for problems the user can fix; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from export.errors import UserError


def _run(prog: str, body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"{prog}: %(message)s")
    warnings.filterwarnings("ignore", message="no --backbone-weights")  # the logger says it once
    try:
        return body(args)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def dataset_main(argv: Sequence[str] | None = None) -> int:
    """``edge-dataset``: write an MVTec-style dataset made from scikit-image's texture photographs."""
    from export.texture_dataset import DEFECT_KINDS, TEXTURES

    parser = argparse.ArgumentParser(
        prog="edge-dataset",
        description="Make an MVTec-style dataset (train/good, test/<defect>, ground_truth/<defect>) from a real "
        f"texture photograph shipped with scikit-image. Test defects: {', '.join(DEFECT_KINDS)}.",
    )
    parser.add_argument("--texture", required=True, choices=TEXTURES)
    parser.add_argument("--out", required=True, type=Path, help="folder to create (must be new or empty)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--train", type=int, default=200, help="good training images")
    parser.add_argument("--test-good", type=int, default=30)
    parser.add_argument("--test-per-defect", type=int, default=15)
    parser.add_argument("--crop", type=int, default=192, help="side of the window cut from the 512 px photo")
    parser.add_argument("--seed", type=int, default=0)

    def body(args: argparse.Namespace) -> int:
        from export.texture_dataset import make_texture_dataset

        try:
            summary = make_texture_dataset(
                args.texture,
                args.out,
                image_size=args.image_size,
                train=args.train,
                test_good=args.test_good,
                test_per_defect=args.test_per_defect,
                crop=args.crop,
                seed=args.seed,
            )
        except (ValueError, FileExistsError) as exc:
            raise UserError(str(exc)) from exc
        print(json.dumps(summary, indent=2, default=str))
        return 0

    return _run("edge-dataset", body, parser, argv)


def train_main(argv: Sequence[str] | None = None) -> int:
    """``edge-train``: train a model on good images plus simulated defects and write a checkpoint."""
    parser = argparse.ArgumentParser(
        prog="edge-train",
        description="Train an anomaly-detection model on a folder of good images (MVTec layout: DATA/train/good).",
    )
    parser.add_argument("--model", default="memseg", choices=["memseg"])
    parser.add_argument("--data", required=True, type=Path, help="dataset folder holding train/good")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint to write, e.g. memseg.pt")
    parser.add_argument("--image-size", type=int, default=256, help="model input side in pixels (×32)")
    parser.add_argument("--memory-samples", type=int, default=30, help="good images kept as the memory")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8, help="half good, half simulated defects")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--backbone-weights", type=Path, help="torchvision ResNet18 state dict; without it: random init"
    )
    parser.add_argument(
        "--train-trunk",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also train conv1…layer3 and refresh the memory features as they change (default: frozen, as in "
        "the paper; README has the measurements behind the choice)",
    )
    parser.add_argument("--memory-refresh", type=int, default=10, help="iterations between memory refreshes")
    parser.add_argument("--texture-dir", type=Path, help="texture images for defect simulation (e.g. DTD)")
    parser.add_argument(
        "--foreground", action="store_true", help="simulate defects on the object only (object-like parts)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def body(args: argparse.Namespace) -> int:
        from export.train import TrainOptions, train

        summary = train(
            TrainOptions(
                data=args.data,
                out=args.out,
                image_size=args.image_size,
                memory_samples=args.memory_samples,
                iterations=args.iterations,
                batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                device=args.device,
                seed=args.seed,
                backbone_weights=args.backbone_weights,
                train_trunk=args.train_trunk,
                memory_refresh=args.memory_refresh,
                texture_dir=args.texture_dir,
                use_foreground=args.foreground,
            ),
            progress=not args.no_progress,
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

    def body(args: argparse.Namespace) -> int:
        from export.evaluate import evaluate

        grid = args.grid or args.checkpoint.with_name(args.checkpoint.stem + "_eval.png")
        print(json.dumps(evaluate(args.checkpoint, args.data, args.device, grid), indent=2))
        return 0

    return _run("edge-eval", body, parser, argv)
