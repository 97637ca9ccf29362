"""The demo's summary and its judgement: what the model, the export and the calibration measured, and a verdict
table a plant manager reads. Defective parts that passed (escapes) are named and counted: they are the model's
misses at the calibrated threshold, which ``eval.png`` shows, not faults of the line. Exit status 1 when errors
exceed 1 % of the parts, when parts got no verdict, or when a PLC protocol of edge-bridge (OPC UA, Modbus TCP:
``probe.json`` from ``python -m edge.bridge.probe``) did not deliver every verdict once and in order, each with why
and what to change.
The line's path (``path.json`` from ``scripts/demo_path.py``) is named with the latency.

Each emulated part is one image of ``OUT/camera`` (``NNN_<defect>.png``, ``good`` for good parts), streamed in
name order; a verdict's ``frame_id`` (the camera's frame counter) says which image it judged.

    python3 scripts/demo_summary.py --out runs/demo --fps 24.5 --engine-rate 35.0 --started 1795000000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

MAX_ERROR_SHARE = 0.01  # errors above 1 % of the parts fail the demo
LINE_FIXES = {  # what to change when a reason's errors are too many
    "overrun": "The line fell behind the camera: lower --fps, or run a faster backend (a GPU: edge-build, then "
    "--engine model.plan)",
    "deadline": "Verdicts came too late: lower --fps, raise --verdict-deadline-ms, or run a faster backend",
    "trigger_overrun": "The camera was triggered while busy: lower --fps or shorten the exposure",
    "frame_lost": "Frames were lost between camera and host: check the link, lower --fps",
    "frame_format": "Frames do not match the engine: re-export with edge-export --frame-size WxH (and --roi)",
}


@dataclass
class Tally:
    """The demo's verdicts sorted by what the part really was."""

    parts: int  # images the camera streamed
    defective: int = 0
    good: int = 0
    defective_failed: int = 0
    defective_errors: int = 0
    good_passed: int = 0
    false_rejects: list[tuple[str, dict]] = field(default_factory=list)  # good parts failed or in error
    escapes: list[tuple[str, dict]] = field(default_factory=list)  # defective parts passed
    errors: Counter = field(default_factory=Counter)  # by reason
    unattributed: int = 0  # verdicts for parts the camera made no frame of (frame_id -1)
    verdicts: int = 0


def is_good(name: str) -> bool:
    """Whether a camera image ``NNN_<defect>.png`` shows a good part."""
    return Path(name).stem.split("_", 1)[1] == "good"


def tally(verdicts: list[dict], names: list[str]) -> Tally:
    """Count ``verdicts`` against the parts they judged (``names[frame_id % len(names)]``)."""
    result = Tally(parts=len(names), verdicts=len(verdicts))
    for verdict in verdicts:
        if verdict["verdict"] == "error":
            result.errors[verdict["reason"]] += 1
        if verdict["frame_id"] < 0:
            result.unattributed += 1
            continue
        name = names[verdict["frame_id"] % len(names)]
        if is_good(name):
            result.good += 1
            if verdict["verdict"] == "pass":
                result.good_passed += 1
            else:
                result.false_rejects.append((name, verdict))
        else:
            result.defective += 1
            if verdict["verdict"] == "pass":
                result.escapes.append((name, verdict))
            elif verdict["verdict"] == "fail":
                result.defective_failed += 1
            else:
                result.defective_errors += 1
    return result


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:5.1f} %" if total else "    - "


def _why(verdict: dict) -> str:
    if verdict["verdict"] == "error":
        return f"error({verdict['reason']})"
    relation = ">=" if verdict["verdict"] == "fail" else "<"
    return f"{verdict['verdict']}, score {verdict['score']:.4f} {relation} {verdict['threshold']:.4f}"


def table(t: Tally) -> list[str]:
    """The verdict table, one line per row, and the parts behind the rows that must be looked at."""
    errors = sum(t.errors.values())
    rejected = t.defective_failed + t.defective_errors
    rows = [
        ("defective parts rejected", rejected, t.defective, f"{t.defective_failed} failed, {t.defective_errors} error"),
        ("good parts passed", t.good_passed, t.good, ""),
        ("false rejects", len(t.false_rejects), t.good, "good parts failed or in error"),
        ("escapes", len(t.escapes), t.defective, "defective parts passed: the model's misses at this threshold"),
        ("errors", errors, t.parts, f"at most {100 * MAX_ERROR_SHARE:.0f} %"),
    ]
    lines = [f"  {name:<26}{n:>5} of {total:<5}{_share(n, total)}   {note}".rstrip() for name, n, total, note in rows]
    if t.errors:
        lines.append("  errors by reason: " + ", ".join(f"{reason} {n}" for reason, n in t.errors.most_common()))
    for title, parts in (("false rejects", t.false_rejects), ("escapes", t.escapes)):
        if parts:
            lines.append(f"  {title}: " + "; ".join(f"{name} ({_why(v)})" for name, v in parts))
    return lines


PROTOCOLS = {"opcua": "OPC UA client", "modbus": "Modbus PLC"}


def plc_table(probe: dict, t: Tally) -> list[str]:
    """What the stand-in PLC's clients received through edge-bridge, against the verdicts on the line."""
    lines = []
    for key, name in PROTOCOLS.items():
        seen = probe.get(key)
        if seen is None:
            lines.append(f"  {name:<26}  not run")
            continue
        order = "in order, no gaps, no repeats" if seen["ok"] else f"gaps {seen['gaps']}, repeats {seen['repeated']}"
        lines.append(
            f"  {name:<26}{seen['verdicts']:>5} of {t.verdicts:<5}  {seen['pass']} pass, {seen['fail']} fail, "
            f"{seen['error']} error; {order}"
        )
    return lines


def problems(t: Tally, fps: float, engine_rate: float, probe: dict | None = None) -> list[str]:
    """Why the demo failed and what to change; empty when it passed."""
    found = []
    errors = sum(t.errors.values())
    if errors > MAX_ERROR_SHARE * t.parts:
        fixes = sorted({LINE_FIXES.get(reason, f"For {reason}: see verdicts.jsonl") for reason in t.errors})
        found.append(
            f"{errors} of {t.parts} parts ({100 * errors / t.parts:.1f} %) got an error verdict, more than "
            f"{100 * MAX_ERROR_SHARE:.0f} %; the camera was triggered at {fps:.1f} parts/s, the engine alone ran "
            f"{engine_rate:.1f} frames/s on this machine. " + " ".join(f"{fix}." for fix in fixes)
        )
    if t.verdicts != t.parts:
        found.append(
            f"{t.parts} parts were streamed but {t.verdicts} verdicts arrived: for the PLC a part without a verdict "
            "is a reject; see listen.log for gaps in seq"
        )
    for key, name in PROTOCOLS.items():
        seen = (probe or {}).get(key)
        if probe is not None and (seen is None or not seen["ok"]):
            got = (
                "nothing"
                if seen is None
                else f"{seen['verdicts']} verdicts (gaps {seen['gaps']}, repeats {seen['repeated']})"
            )
            found.append(
                f"the {name} behind edge-bridge received {got} of {t.parts}: see bridge.log and probe.log (a port in "
                "use? another edge-bridge running?)"
            )
    return found


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the demo's folder (runs/demo)")
    parser.add_argument("--fps", type=float, required=True, help="the rate the camera was triggered at")
    parser.add_argument("--engine-rate", type=float, required=True, help="frames/s the engine ran alone")
    parser.add_argument("--started", type=float, required=True, help="when the demo started (Unix seconds)")
    args = parser.parse_args(argv)
    out = args.out
    metrics = json.loads((out / "eval.json").read_text())
    check = json.loads((out / "verify.json").read_text())
    calibration = json.loads((out / "calibration.json").read_text())
    names = sorted(p.name for p in (out / "camera").glob("*.png"))
    verdicts = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    latency = [v["latency_ms"]["total"] for v in verdicts if v["latency_ms"]["total"] is not None]
    path = json.loads((out / "path.json").read_text()) if (out / "path.json").exists() else None
    probe_file = out / "probe.json"
    probe = json.loads(probe_file.read_text() or "{}") if probe_file.exists() else None
    low, high = calibration["false_reject_interval"]
    print("\n== summary")
    print(
        f"model:       image AUROC {metrics['image_auroc']:.3f}, pixel AUROC {metrics['pixel_auroc']:.3f}, "
        f"PRO {metrics['pro']:.3f} (edge-eval, {metrics['images']} test images)"
    )
    print(
        f"export:      ONNX Runtime vs checkpoint max |Δscore| {check['max_score_difference']:.1e}, "
        f"verdicts differing {check['verdicts_differing']}"
    )
    print(
        f"calibration: threshold {calibration['threshold']:.4f}, expected false rejects 1 % "
        f"(95 % interval {100 * low:.2g}–{100 * high:.2g} %)"
    )
    if latency:
        print(
            f"line:        receive→verdict p50 {_percentile(latency, 0.5):.1f} ms, "
            f"p99 {_percentile(latency, 0.99):.1f} ms ({path['chosen'] if path else 'CPU'})"
        )
    if path:
        print(f"path:        {path['why']}")
    result = tally(verdicts, names)
    print(
        f"\n== verdict table: {result.parts} parts through the emulated camera, triggered at {args.fps:.1f} parts/s "
        f"(the engine alone: {args.engine_rate:.1f} frames/s)"
    )
    print("\n".join(table(result)))
    if probe is not None:
        print("\n== through edge-bridge to a stand-in PLC (python -m edge.bridge.probe)")
        print("\n".join(plc_table(probe, result)))
    print(f"\nlook at:     {out}/eval.png, {out}/model.onnx.calibration/report.md, {out}/rejects/ (one PNG and JSON")
    print("             per rejected part: the frame, its anomaly map, the regions, the verdict)")
    print(f"took {time.time() - args.started:.0f} s")
    if result.escapes:
        print(
            f"\n{len(result.escapes)} defective part(s) passed: the model scores them below the threshold (see them in "
            "eval.png). Calibrate with bad images (edge-calibrate --bad) to see the zero-escape threshold and its "
            "false-reject rate, or choose another model for this surface (docs/models.md)"
        )
    found = problems(result, args.fps, args.engine_rate, probe)
    if found:
        print("\nDEMO FAILED:\n" + "\n".join(f"- {problem}" for problem in found), file=sys.stderr)
        return 1
    print(
        "\nnext: train on a GPU (edge-train --device cuda), export for your camera (edge-export "
        "--frame-size WxH --pixel-format mono8 --roi x,y,w,h --precision fp16), build on the target (edge-build), "
        "calibrate with pictures from the station, then edge-run --engine model.plan --camera basler://SERIAL"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
