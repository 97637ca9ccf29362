"""Command-line tools of the line side. Each prints one clear ``error:`` line (status 2) for problems a user
can fix, never a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from edge.engines import EngineError
from edge.sidecar import SidecarError


def build_main(argv: Sequence[str] | None = None) -> int:
    """``edge-build``: ONNX → TensorRT plan."""
    from edge.tensorrt_build import RTX_TARGETS, BuildError, build_plan

    parser = argparse.ArgumentParser(
        prog="edge-build",
        description="Build a TensorRT plan from an ONNX made by edge-export, strongly typed (the ONNX's precision), "
        "with a batch profile 1…max from its sidecar. Build on the machine that will run it: a plan is native "
        "code for one TensorRT version and one GPU.",
    )
    parser.add_argument("--onnx", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="plan to write, e.g. memseg.plan")
    parser.add_argument("--target-sm", choices=RTX_TARGETS, help="TensorRT-RTX only: GPU architecture to build for")
    parser.add_argument("--workspace-mb", type=int, default=2048)
    parser.add_argument("--timing-cache", type=Path, help="file to reuse and update (faster rebuilds)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="edge-build: %(message)s")
    try:
        log_path = build_plan(args.onnx, args.out, args.target_sm, args.workspace_mb, args.timing_cache)
    except (BuildError, EngineError, SidecarError) as exc:
        print(f"edge-build: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}, its sidecar and {log_path}")
    return 0
