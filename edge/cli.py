"""Command-line tools of the line side. Each prints one clear ``error:`` line (status 2) for problems a user
can fix, never a traceback (:mod:`edge.tool`)."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from edge.engines import EngineError
from edge.sidecar import SidecarError
from edge.tool import ToolError, run_tool


def build_main(argv: Sequence[str] | None = None) -> int:
    """``edge-build``: ONNX → TensorRT plan."""
    from edge.tensorrt_build import RTX_TARGETS, BuildError, build_plan

    parser = argparse.ArgumentParser(
        prog="edge-build",
        description="Build a TensorRT plan from an ONNX made by edge-export, strongly typed (the ONNX's precision), "
        "with a batch profile 1…max from its sidecar, tuned for --opt-batch. Build on the machine that will run it "
        "(on a Jetson, on the Jetson): a plan is native code for one TensorRT version and one GPU.",
    )
    parser.add_argument("--onnx", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="plan to write, e.g. memseg.plan")
    parser.add_argument("--target-sm", choices=RTX_TARGETS, help="TensorRT-RTX only: GPU architecture to build for")
    parser.add_argument("--workspace-mb", type=int, default=2048)
    parser.add_argument("--timing-cache", type=Path, help="file to reuse and update (faster rebuilds)")
    parser.add_argument(
        "--opt-batch",
        type=int,
        default=1,
        help="the batch size TensorRT tunes for, 1 to the ONNX's max batch (default 1: the line judges one part at "
        "a time; give your batch size if you batch)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="edge-build: %(message)s")

    def body() -> int:
        log_path = build_plan(
            args.onnx, args.out, args.target_sm, args.workspace_mb, args.timing_cache, opt_batch=args.opt_batch
        )
        print(f"wrote {args.out}, its sidecar and {log_path}")
        return 0

    return run_tool("edge-build", body, (BuildError, EngineError, SidecarError))


RUN_EPILOG = """
Every captured frame gets exactly one verdict on verdict/<station>: pass, fail, or error with a reason
(unreadable_image, frame_format, overrun, engine_error, invalid_output, capture_failed, sink_error, ...). Treat a
part as a reject until its pass arrives. A stage that fails for good (the source raising the unexpected, --jsonl
unwritable, a stage stuck for twice --stall-s) ends the run with exit status 1 after the final status says why.
Heartbeats (heartbeat/<station>, every second) carry the counters; status/<station> says when the run starts and
stops. A finite source (folder without ?loop=1, video) ends the run after its last verdict.
With --control, operators change the threshold or pause the station with edge-control (paused: error(paused)).

examples:
  edge-run --engine memseg.onnx --camera folder://parts --threshold 0.5 --jsonl -
  edge-run --config /etc/edge/line3.toml --camera basler://40123456   (example: deploy/station.toml)
"""


def _flag_overrides(args: argparse.Namespace) -> dict:
    from edge.config import StationConfig

    return {k: getattr(args, k) for k in StationConfig.__dataclass_fields__ if hasattr(args, k)}


def _engine_arguments(parser: argparse.ArgumentParser) -> None:
    from edge.engines import backend_names
    from edge.engines.openvino_engine import INFERENCE_PRECISIONS

    group = parser.add_argument_group("engine runtime (README: choosing the runtime)")
    group.add_argument(
        "--backend",
        choices=backend_names(),
        help="auto (default): by the artefact's suffix; openvino runs an .onnx on OpenVINO (CPU)",
    )
    group.add_argument(
        "--inference-precision",
        choices=list(INFERENCE_PRECISIONS),
        help="OpenVINO: fp32 (default) or bf16 where the CPU has BF16 instructions",
    )
    group.add_argument("--threads", type=int, help="OpenVINO: inference threads (default: all cores)")
    group.add_argument("--openvino-cache", help="OpenVINO: compiled-model cache folder (default: ENGINE.openvino/)")


def run_main(argv: Sequence[str] | None = None) -> int:
    """``edge-run``: stream a source through an engine and publish verdicts."""
    parser = argparse.ArgumentParser(
        prog="edge-run",
        description="Inspect parts on the line: capture → preprocess → infer → score, verdicts published over "
        "ZeroMQ to PLC subscribers. Settings come from --config (TOML, same names with underscores), then flags.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="station TOML file")
    parser.add_argument("--engine", help="artefact: .plan/.engine (TensorRT), .onnx (ONNX Runtime), .pt2 (torch)")
    _engine_arguments(parser)
    parser.add_argument("--camera", help="basler0, basler://SERIAL, folder://DIR[?loop=1] or video://FILE")
    parser.add_argument("--station", help="station name in topics and verdicts (default: station)")
    parser.add_argument("--publish", help="ZeroMQ endpoint to bind (default tcp://*:5556; ipc:// works too)")
    parser.add_argument("--threshold", type=float, help="image-score threshold (default: the engine's calibration)")
    parser.add_argument("--pixel-threshold", type=float, help="region threshold (default: calibration)")
    parser.add_argument("--max-batch", type=int, help="frames per inference (default: the engine's maximum)")
    parser.add_argument("--batch-timeout-ms", type=float, help="longest wait for a batch to fill (default 2)")
    parser.add_argument("--queue-size", type=int, help="frames waiting for inference before overrun (default 8)")
    parser.add_argument("--wait-subscribers", type=int, help="hold capture until N subscribers (finite sources: 1)")
    parser.add_argument("--wait-timeout", type=float, help="seconds to wait for them (default 10)")
    parser.add_argument("--jsonl", help="also write every verdict as a JSON line to this file, or - for stdout")
    parser.add_argument("--rejects", help="folder for rejected frames with heatmaps (bounded)")
    parser.add_argument("--rejects-max-files", type=int)
    parser.add_argument("--rejects-max-mb", type=float)
    parser.add_argument("--heatmaps", action="store_true", default=None, help="publish PNG heatmaps of rejects")
    parser.add_argument("--heartbeat-s", type=float, help="heartbeat interval (default 1)")
    parser.add_argument("--linger-ms", type=int, help="longest wait for unsent messages at exit (default 1000)")
    parser.add_argument("--max-frames", type=int, help="stop after this many captured frames")
    parser.add_argument("--snapshot", help="REQ/REP endpoint for late joiners' status and last verdicts")
    parser.add_argument(
        "--control",
        help="REQ/REP endpoint for operators: set_threshold, pause, resume, status (this machine only, e.g. "
        "tcp://127.0.0.1:5558, unless CURVE admits operators' keys with --control-allow)",
    )
    parser.add_argument(
        "--verdict-deadline-ms", type=float, help="a frame not judged this long after capture gets error(deadline)"
    )
    parser.add_argument(
        "--stall-s",
        type=float,
        help="watchdog: a live camera silent or a stage stuck this long → degraded; stuck twice as long → exit 1",
    )
    parser.add_argument("--metrics", help="Prometheus /metrics on PORT or HOST:PORT (default off; bridge extra)")
    security = parser.add_argument_group("security (CURVE; see edge-keys)")
    security.add_argument("--curve-secret", help="the station's secret certificate (NAME.key_secret)")
    security.add_argument("--curve-allow", help="folder of the public certificates of admitted subscribers")
    security.add_argument("--control-allow", help="folder of the public certificates of admitted operators")
    camera = parser.add_argument_group("Basler camera (basler0, basler://SERIAL)")
    camera.add_argument(
        "--trigger",
        choices=["free", "software", "line1", "line2", "line3", "line4"],
        help="free-run (default), software trigger, or a hardware trigger line",
    )
    camera.add_argument("--exposure-us", type=float, help="exposure time in µs")
    camera.add_argument("--gain", type=float, help="gain in the camera's unit (dB or raw)")
    camera.add_argument("--fps", type=float, help="free-run frame rate, or software triggers per second")
    camera.add_argument("--offset-x", type=int, help="sensor column of the frame's left edge (default 0)")
    camera.add_argument("--offset-y", type=int, help="sensor row of the frame's top edge (default 0)")
    camera.add_argument("--emulator-images", help="pylon camera emulator only: folder of images to stream")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="edge-run: %(message)s")
    from edge.config import ConfigError, StationConfig
    from edge.run import RunError, run_station

    return run_tool(
        "edge-run",
        lambda: run_station(StationConfig.load(args.config, _flag_overrides(args))),
        (ConfigError, RunError),
    )


def _client_curve_arguments(parser: argparse.ArgumentParser, whose: str) -> None:
    parser.add_argument("--curve-secret", type=Path, help=f"{whose} secret certificate (CURVE)")
    parser.add_argument("--curve-server", type=Path, help="the station's public certificate (CURVE)")


def _client_curve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Path, Path] | None:
    """(own secret certificate, station's public certificate), None without CURVE; half of it is an error."""
    if (args.curve_secret is None) != (args.curve_server is None):
        parser.error("CURVE needs both --curve-secret and --curve-server")
    return (args.curve_secret, args.curve_server) if args.curve_secret else None


def listen_main(argv: Sequence[str] | None = None) -> int:
    """``edge-listen``: print a station's verdicts, detect gaps, summarise."""
    parser = argparse.ArgumentParser(
        prog="edge-listen",
        description="Subscribe to an edge-run publisher, print verdicts as they arrive, report gaps in seq, and "
        "summarise on exit (Ctrl-C, --count, --idle-timeout, or the publisher's final status).",
    )
    parser.add_argument("endpoint", help="e.g. tcp://localhost:5556")
    parser.add_argument("--station", default="", help="only this station (default: all on the endpoint)")
    parser.add_argument("--count", type=int, help="stop after this many verdicts")
    parser.add_argument("--idle-timeout", type=float, help="stop after this many seconds without messages")
    parser.add_argument("--jsonl", type=Path, help="write received verdicts as JSON lines")
    parser.add_argument("--quiet", action="store_true", help="only the summary")
    _client_curve_arguments(parser, "this subscriber's")
    args = parser.parse_args(argv)
    from edge.listen import listen
    from edge.security import SecurityError

    curve = _client_curve(parser, args)

    def body() -> int:
        try:
            return listen(args.endpoint, args.station, args.count, args.idle_timeout, args.jsonl, args.quiet, curve)
        except KeyboardInterrupt:
            return 0

    return run_tool("edge-listen", body, (SecurityError,))


def keys_main(argv: Sequence[str] | None = None) -> int:
    """``edge-keys``: make a CURVE key pair."""
    parser = argparse.ArgumentParser(
        prog="edge-keys",
        description="Make a CURVE key pair: NAME.key (public: give it to the other side) and NAME.key_secret (keep "
        "it; readable by its owner only). The station runs with --curve-secret station.key_secret --curve-allow DIR "
        "(DIR holds the subscribers' .key files); a subscriber with --curve-secret its.key_secret --curve-server "
        "station.key.",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the two files")
    parser.add_argument("--name", required=True, help="e.g. station or plc1")
    args = parser.parse_args(argv)
    from edge.security import make_keys

    public, secret = make_keys(args.out, args.name)
    print(f"wrote {public} (public) and {secret} (secret)")
    return 0


def control_main(argv: Sequence[str] | None = None) -> int:
    """``edge-control``: change a running station's thresholds, pause or resume it, or ask its status."""
    parser = argparse.ArgumentParser(
        prog="edge-control",
        description="Send one request to a station's control socket (edge-run --control ENDPOINT) and print the "
        "answer. Changes last for the run and are announced on the station's status topic; the calibrated "
        "threshold in the sidecar changes only with edge-calibrate. While paused, every frame gets error(paused).",
    )
    parser.add_argument("endpoint", help="e.g. tcp://127.0.0.1:5558")
    common = argparse.ArgumentParser(add_help=False)  # options every command takes, after its name
    _client_curve_arguments(common, "the operator's")
    common.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", parents=[common], help="health, thresholds, counters")
    threshold = commands.add_parser(
        "set-threshold", parents=[common], help="change the image-score and/or pixel threshold"
    )
    threshold.add_argument("--score", type=float)
    threshold.add_argument("--pixel", type=float)
    pause = commands.add_parser("pause", parents=[common], help="judge every frame error(paused) until resume")
    pause.add_argument("--reason", default="")
    commands.add_parser("resume", parents=[common], help="judge frames again")
    args = parser.parse_args(argv)
    import zmq

    from edge.client import NoAnswer, request
    from edge.security import SecurityError

    payload: dict = {"command": args.command.replace("-", "_")}
    if args.command == "set-threshold":
        payload |= {k: v for k, v in (("score", args.score), ("pixel", args.pixel)) if v is not None}
    elif args.command == "pause" and args.reason:
        payload["reason"] = args.reason
    curve = _client_curve(parser, args)

    def body() -> int:
        try:
            answer = request(args.endpoint, payload, args.timeout, curve)
        except zmq.ZMQError as exc:
            raise ToolError(f"{args.endpoint}: {exc} (write it as tcp://HOST:PORT or ipc://PATH)") from exc
        except ValueError as exc:
            raise ToolError(f"{args.endpoint} did not answer in JSON ({exc}): is it a control socket?") from exc
        print(json.dumps(answer, indent=2))
        return 0 if answer.get("ok") else 1

    return run_tool("edge-control", body, (NoAnswer, SecurityError))


def bench_main(argv: Sequence[str] | None = None) -> int:
    """``edge-bench``: engine-only and whole-pipeline latency and throughput."""
    parser = argparse.ArgumentParser(
        prog="edge-bench",
        description="Measure an engine alone (latency p50/p90/p99/max, jitter, throughput per batch size, after "
        "warm-up) and the whole pipeline (frame captured → verdict received by a subscriber process, per stage). "
        "Writes bench.json, bench.md and PNG plots to --out.",
    )
    parser.add_argument(
        "--engine",
        required=True,
        help="artefact to measure, with its sidecar next to it: .plan/.engine (TensorRT), .onnx (ONNX Runtime), "
        ".pt2 (torch); several, comma-separated, are measured side by side",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        help="comma-separated: auto (by suffix), onnxruntime, openvino, …: each artefact on each backend that runs it",
    )
    parser.add_argument("--inference-precision", default="fp32", help="OpenVINO, comma-separated: fp32, bf16")
    parser.add_argument("--rounds", type=int, default=5, help="side by side: rounds taken in turns (default 5)")
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes, e.g. 1,8,32 (default 1)")
    parser.add_argument("--frames", type=int, default=200, help="frames per measurement (default 200)")
    parser.add_argument("--no-pipeline", action="store_true", help="the engine alone (default: engine and pipeline)")
    parser.add_argument(
        "--camera", help="time the pipeline on this source (e.g. basler0) instead of generated frames (the default)"
    )
    parser.add_argument("--out", type=Path, help="folder for bench.json, bench.md and plots (default: print only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="edge-bench: %(message)s")
    from edge.bench import markdown, run_bench, run_ways, ways_from, ways_markdown

    def body() -> int:
        try:
            batches = sorted({int(b) for b in args.batch.split(",")})
        except ValueError as exc:
            raise ToolError(f"--batch {args.batch!r}: write sizes like 1,8,32") from exc
        ways = ways_from(
            [Path(e) for e in args.engine.split(",")], args.backend.split(","), args.inference_precision.split(",")
        )
        if len(ways) > 1:
            result = run_ways(ways, batches, args.frames, not args.no_pipeline, args.out, args.rounds)
            print(ways_markdown(result))
            return 0
        way = ways[0]
        result = run_bench(way.engine, batches, args.frames, not args.no_pipeline, args.out, args.camera, way.settings)
        print(markdown(result))
        return 0

    return run_tool("edge-bench", body, (EngineError, SidecarError))
