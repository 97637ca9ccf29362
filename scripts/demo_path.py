"""The demo's line path: the fastest way this CPU runs the exported model whose verdicts do not move.

It times, side by side in one run (``edge.bench.run_ways``), ONNX Runtime FP32 (the fallback), OpenVINO FP32 and,
where the CPU has BF16 instructions, OpenVINO BF16, plus the INT8 artefact on both runtimes when one is given.
Every reduced-precision way is checked against the FP32 checkpoint on the test set (``export.verify``: verdicts
at the calibrated threshold, image and pixel AUROC), or, for the INT8 artefact, by the check its export recorded
(``build.fidelity`` in its sidecar, made on the same test set); a way the gate refuses is not used. Prints one
line for the shell (``BACKEND OPENVINO_PRECISION ARTEFACT FRAMES_PER_S NAME``) and writes ``path.json`` with every
way's numbers and why the chosen one won.

    python3 scripts/demo_path.py --out runs/demo --engine runs/demo/model.onnx --int8 runs/demo/model-int8.onnx
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FALLBACK = ("onnxruntime", "fp32")


@dataclass(frozen=True)
class Candidate:
    """One way to run the line and what is known of it."""

    name: str
    artefact: Path
    backend: str
    precision: str  # the arithmetic: fp32, bf16 or int8
    frames_per_s: float
    passed: bool | None = None  # the fidelity gate (None: FP32, nothing to check)
    gate: str = ""


def choose(candidates: list[Candidate]) -> tuple[Candidate, str]:
    """The fastest candidate that is FP32 or passed the gate, and a sentence saying why."""
    usable = [c for c in candidates if c.passed is not False]
    best = max(usable, key=lambda c: c.frames_per_s)
    fallback = next(c for c in candidates if (c.backend, c.precision) == FALLBACK)
    refused = [c.name for c in candidates if c.passed is False]
    speed_up = best.frames_per_s / fallback.frames_per_s
    why = f"{best.name}: {best.frames_per_s:.1f} frames/s, {speed_up:.1f}× {fallback.name}"
    if best is fallback:
        why = f"{fallback.name} (the fallback): no faster way passed"
    if refused:
        why += f"; refused by the fidelity gate: {', '.join(refused)}"
    return best, why


def recorded_check(artefact: Path, backend: str):
    """The fidelity check ``edge-export`` recorded for ``artefact`` on ``backend``, if it made one."""
    from edge.sidecar import read_sidecar
    from export.verify import Comparison

    for entry in read_sidecar(artefact).build.get("fidelity", []):
        if entry["backend"] == backend:
            return Comparison(**{key: value for key, value in entry.items() if key != "passed"})
    return None


def ways(engine: Path, int8: Path | None) -> list:
    """ORT and OpenVINO FP32 on the FP32 artefact, OpenVINO BF16 where the CPU has it, the INT8 artefact on both."""
    from edge.bench import Way

    found = [Way(engine, {"backend": "onnxruntime"})]
    try:
        import openvino

        from edge.engines.openvino_engine import cpu_capabilities
    except ImportError:
        print("demo_path: OpenVINO is not installed: ONNX Runtime only", file=sys.stderr)
    else:
        found.append(Way(engine, {"backend": "openvino", "inference_precision": "fp32"}))
        if "BF16" in cpu_capabilities(openvino.Core()):
            found.append(Way(engine, {"backend": "openvino", "inference_precision": "bf16"}))
        if int8 is not None:
            found.append(Way(int8, {"backend": "openvino", "inference_precision": "fp32"}))
    if int8 is not None:
        found.append(Way(int8, {"backend": "onnxruntime"}))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the demo's folder (bench/ and path.json go there)")
    parser.add_argument("--engine", type=Path, required=True, help="the calibrated FP32 export")
    parser.add_argument("--int8", type=Path, help="the INT8 export, if the gate let one through")
    parser.add_argument("--reference", type=Path, required=True, help="the checkpoint (FP32 reference)")
    parser.add_argument("--data", type=Path, required=True, help="the test set the gate checks on")
    parser.add_argument("--frames", type=int, default=40, help="frames per way and round")
    args = parser.parse_args(argv)

    from edge.bench import run_ways
    from edge.sidecar import read_sidecar
    from export.verify import verify

    candidate_ways = ways(args.engine, args.int8)
    result = run_ways(candidate_ways, [1], args.frames, pipeline=False, out=args.out / "bench", rounds=3)
    threshold = read_sidecar(args.engine).calibration["threshold"]
    candidates = []
    for way, timed in zip(candidate_ways, result["ways"], strict=True):
        precision = "int8" if way.engine == args.int8 else way.settings.get("inference_precision") or "fp32"
        passed, gate = None, ""
        if precision != "fp32":
            comparison = recorded_check(way.engine, way.settings["backend"]) or verify(
                way.engine,
                args.reference,
                args.data,
                threshold=threshold,
                backend=way.settings["backend"],
                inference_precision=way.settings.get("inference_precision"),
            )
            passed, gate = comparison.verdicts_differing == 0 and comparison.passed, comparison.summary()
        rate = timed["engine_only"][0]["frames_per_s"]
        candidates.append(Candidate(timed["name"], way.engine, way.settings["backend"], precision, rate, passed, gate))
    best, why = choose(candidates)
    report = {
        "chosen": best.name,
        "why": why,
        "ways": [{**c.__dict__, "artefact": str(c.artefact)} for c in candidates],
    }
    (args.out / "path.json").write_text(json.dumps(report, indent=2))
    for c in candidates:
        mark = "→" if c is best else " "
        status = "" if c.passed is None else ("  gate passed" if c.passed else "  gate refused")
        print(f"   {mark} {c.name:<40} {c.frames_per_s:7.1f} frames/s{status}", file=sys.stderr)
        if c.gate:
            print(f"       {c.gate}", file=sys.stderr)
    print(f"   the line runs {why}", file=sys.stderr)
    hint = "bf16" if best.precision == "bf16" else "fp32"
    print(best.backend, hint, best.artefact, f"{best.frames_per_s:.2f}", best.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
