"""``edge-calibrate``'s command line: thresholds from good (and bad) images into the engine's sidecar, and a
report. A problem the user can fix is one ``error:`` line (status 2, :mod:`edge.tool`), never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from calibration.run import CalibrationError, calibrate
from edge.engines import EngineError
from edge.sidecar import SidecarError
from edge.tool import missing_extra, run_tool


def calibrate_main(argv: Sequence[str] | None = None) -> int:
    """``edge-calibrate``: thresholds from good (and bad) images into the engine's sidecar, and a report."""
    parser = argparse.ArgumentParser(
        prog="edge-calibrate",
        description="Choose the image-score threshold for a target false-reject rate from pictures of good parts "
        "(and, if given, bad parts) taken by the station's camera, with its uncertainty; write it into the engine's "
        "sidecar (the previous calibration is kept as history) and a report (PNG plots, report.md).",
    )
    parser.add_argument("--engine", required=True, type=Path, help=".onnx, .plan or .pt2 artefact")
    parser.add_argument("--good", required=True, type=Path, help="folder of good-part images (not used in training)")
    parser.add_argument("--bad", type=Path, help="folder of bad-part images")
    parser.add_argument("--target-false-reject", type=float, default=0.001, help="good parts failed (default 0.001)")
    parser.add_argument("--report", type=Path, help="folder for the report (default: ENGINE.calibration/)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)
    if (refused := missing_extra("edge-calibrate", "reports", ("scipy", "matplotlib"))) is not None:
        return refused
    logging.basicConfig(level=logging.INFO, format="edge-calibrate: %(message)s")
    report = args.report or args.engine.with_name(args.engine.name + ".calibration")

    def body() -> int:
        result = calibrate(args.engine, args.good, args.bad, args.target_false_reject, report, args.seed)
        shown = {k: result[k] for k in ("threshold", "pixel_threshold", "false_reject_interval", "report")}
        if "bad" in result:
            shown["escape_at_threshold"] = result["bad"]["escape_at_threshold"]
        print(json.dumps(shown))
        return 0

    return run_tool("edge-calibrate", body, (CalibrationError, EngineError, SidecarError))
