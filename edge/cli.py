"""Command-line tools of the line side. Each prints one clear ``error:`` line (status 2) for problems a user
can fix, never a traceback (:mod:`edge.tool`)."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import fields
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


def run_main(argv: Sequence[str] | None = None) -> int:
    """``edge-run``: stream a source through an engine and publish verdicts."""
    parser = argparse.ArgumentParser(
        prog="edge-run",
        description="Inspect parts on the line: capture → preprocess → infer → score, verdicts published over "
        "ZeroMQ to PLC subscribers. Settings come from --config (TOML, same names with underscores), then flags.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from edge.config import GROUP_TITLES, StationConfig
    from edge.settings import add_flags, given

    parser.add_argument("--config", type=Path, help="station TOML file")
    add_flags(parser, ((f.name, f) for f in fields(StationConfig)), GROUP_TITLES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="edge-run: %(message)s")
    from edge.config import ConfigError
    from edge.run import RunError, run_station

    overrides = given(args, (f.name for f in fields(StationConfig)))
    return run_tool(
        "edge-run",
        lambda: run_station(StationConfig.load(args.config, overrides)),
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
    """``edge-control``: change a running station's thresholds or recipe, pause or resume it, or ask its status."""
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
    switch = commands.add_parser(
        "set-recipe",
        parents=[common],
        help="switch to another recipe (edge-run --recipes): loaded and warmed beside the running one, in force "
        "from the next frame or from --at-frame",
    )
    switch.add_argument("name", help="the recipe (DIR/NAME.toml), or #N for the one with number = N")
    switch.add_argument("--at-frame", type=int, help="the first frame id judged by it (a part boundary)")
    args = parser.parse_args(argv)
    import zmq

    from edge.client import NoAnswer, request
    from edge.security import SecurityError

    payload: dict = {"command": args.command.replace("-", "_")}
    if args.command == "set-threshold":
        payload |= {k: v for k, v in (("score", args.score), ("pixel", args.pixel)) if v is not None}
    elif args.command == "pause" and args.reason:
        payload["reason"] = args.reason
    elif args.command == "set-recipe":
        number = args.name[1:] if args.name.startswith("#") else None
        if number is not None and not number.isdigit():
            parser.error(f"set-recipe #{number}: give the recipe's number as #N, e.g. #2")
        payload |= {"number": int(number)} if number is not None else {"name": args.name}
        payload |= {"at_frame": args.at_frame} if args.at_frame is not None else {}
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
    parser.add_argument(
        "--records",
        action="store_true",
        help="the pipeline keeps a station's records too: JSON lines, reject records and heatmaps (every generated "
        "frame fails: the most work per frame)",
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
        result = run_bench(
            way.engine, batches, args.frames, not args.no_pipeline, args.out, args.camera, way.settings, args.records
        )
        print(markdown(result))
        return 0

    return run_tool("edge-bench", body, (EngineError, SidecarError))
