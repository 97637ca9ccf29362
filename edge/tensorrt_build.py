"""``edge-build``: an exported ONNX → a TensorRT plan, built strongly typed (the precision is the ONNX's).

Uses ``tensorrt`` where installed (10.x with the strongly-typed flag, 11.x strongly typed always), else
TensorRT-RTX, whose builder runs without a GPU and targets a compute capability given with ``--target-sm``.
The batch profile runs from 1 to the ONNX's max batch and is tuned for ``opt_batch`` (1 by default: the line
judges one part at a time). The plan's sidecar is the ONNX's, with the library, version and compute capability it
was built for, the profile, and whether the network really was strongly typed (as TensorRT reports it).
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from edge.engines.tensorrt_engine import collecting_logger, import_tensorrt, library_name
from edge.sidecar import read_sidecar, sha256_file, write_sidecar

log = logging.getLogger(__name__)

RTX_TARGETS = ("75", "80", "86", "89", "120", "121")


class BuildError(Exception):
    """The ONNX could not be parsed or built; the message carries TensorRT's reason."""


def local_gpu() -> tuple[str, str]:
    """The first GPU's name and compute capability (``major.minor``); empty strings when they cannot be read."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        device = cuda.Device(0)
        return device.name(), "{}.{}".format(*device.compute_capability())
    except Exception:  # no pycuda, no driver, no GPU: the sidecar then records neither
        return "", ""


def network_precisions(network) -> list[str]:
    """One line per layer: name, type and output data types (what a strongly typed build runs)."""
    lines = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        types = ",".join(str(layer.get_output(j).dtype).split(".")[-1] for j in range(layer.num_outputs))
        lines.append(f"{layer.name}\t{str(layer.type).split('.')[-1]}\t{types}")
    return lines


def create_network(trt, builder, library: str):
    """A network definition, strongly typed where the library allows it, and whether it is (TensorRT's answer).

    The flag is needed on TensorRT 10 and accepted (ignored, always on) on TensorRT 11 and TensorRT-RTX; a library
    without the flag is TensorRT 8 (weakly typed only) or one that has dropped it (strongly typed only).
    """
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        major = int(trt.__version__.split(".")[0])
        return builder.create_network(0), library == "tensorrt_rtx" or major >= 11
    network = builder.create_network(1 << int(flag))
    return network, bool(network.get_flag(flag))


def build_plan(
    onnx_path: Path,
    out: Path,
    target_sm: str | None = None,
    workspace_mb: int = 2048,
    timing_cache: Path | None = None,
    opt_batch: int = 1,
) -> Path:
    """Build ``out`` from ``onnx_path`` with a batch profile 1…max tuned for ``opt_batch``, and write its sidecar
    and build log; returns the log's path."""
    onnx_path, out = Path(onnx_path), Path(out)
    source = read_sidecar(onnx_path)
    frame = source.frame
    if not 1 <= opt_batch <= frame.max_batch:
        raise BuildError(
            f"--opt-batch {opt_batch}: {onnx_path.name} takes batches of 1 to {frame.max_batch}; give one in that "
            "range (1 when the line judges one part at a time)"
        )
    trt = import_tensorrt()
    library = library_name(trt)
    logger = collecting_logger(trt)
    builder = trt.Builder(logger)
    network, strongly_typed = create_network(trt, builder, library)
    if not strongly_typed:
        log.warning(
            "%s %s builds weakly typed networks only: the plan may not keep the ONNX's precision",
            library,
            trt.__version__,
        )
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise BuildError(f"TensorRT cannot parse {onnx_path}: {errors or logger.errors()}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile = builder.create_optimization_profile()
    shape = frame.frame_shape()
    profile.set_shape("frames", (1, *shape), (opt_batch, *shape), (frame.max_batch, *shape))
    config.add_optimization_profile(profile)
    if library == "tensorrt_rtx":
        if target_sm not in RTX_TARGETS:
            raise BuildError(f"TensorRT-RTX builds for a named GPU: give --target-sm, one of {', '.join(RTX_TARGETS)}")
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{target_sm}"), 0)
        gpu, capability = f"any SM{target_sm} GPU", f"{target_sm[:-1]}.{target_sm[-1]}"
    else:
        gpu, capability = local_gpu()
    if library == "tensorrt":  # TensorRT-RTX has no timing cache (its kernels are compiled on the target)
        cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(cache_bytes), False)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        raise BuildError(f"TensorRT could not build {onnx_path}: {logger.errors()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, out)
    if timing_cache is not None and library == "tensorrt":
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    sidecar = replace(
        source,
        artefact_format="plan",
        source={"path": onnx_path.name, "sha256": sha256_file(onnx_path), "from": source.source},
        build={
            **source.build,
            "library": library,
            "tensorrt_version": trt.__version__,
            "compute_capability": capability,
            "gpu": gpu,
            "workspace_mb": workspace_mb,
            "strongly_typed": strongly_typed,
            "batch_profile": {"min": 1, "opt": opt_batch, "max": frame.max_batch},
            "build_seconds": round(seconds, 2),
            "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        calibration=None,
        calibration_history=[],
    )
    write_sidecar(out, sidecar)
    log_path = out.with_name(out.name + ".build.log")
    log_path.write_text(
        f"# {library} {trt.__version__}, compute capability {capability or 'this GPU'}, {seconds:.2f} s, "
        f"{'strongly' if strongly_typed else 'weakly'} typed, batch 1…{frame.max_batch} tuned for {opt_batch}\n"
        "# layer\ttype\toutput types\n"
        + "\n".join(network_precisions(network))
        + "\n# builder messages\n"
        + "\n".join(str(m) for _, m in logger.messages)
        + "\n",
        encoding="utf-8",
    )
    log.info("built %s for %s in %.1f s", out, capability or "this GPU", seconds)
    return log_path
