"""The TensorRT path: a plan where it cannot run is refused in one line before the camera; edge-build's batch
profile and strong typing are what the sidecar says (TensorRT-RTX, no GPU needed); the engine's CUDA context
discipline, checked against a stand-in for pycuda and TensorRT that records each thread's context stack (the real
ones need an NVIDIA GPU); and a built plan against ONNX Runtime on the same frames, where an NVIDIA GPU with
TensorRT and pycuda exists (skipped elsewhere)."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import subprocess
import sys
import threading
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.engines import EngineError, open_engine, tensorrt_engine
from edge.sidecar import read_sidecar, write_sidecar
from tests.test_runtime import free_endpoint, station

#: What this machine lacks to run a plan (empty where an NVIDIA GPU with TensorRT and pycuda exists).
MISSING = tensorrt_engine.runtime_missing()
PLAN_BUILD = {"library": "tensorrt", "tensorrt_version": "10.3.0", "compute_capability": "8.7"}


def fake_plan(onnx: Path, folder: Path, build: dict) -> Path:
    """Bytes standing for a plan, with the sidecar a plan built from ``onnx`` would have."""
    folder.mkdir(exist_ok=True)
    plan = folder / "memseg.plan"
    plan.write_bytes(b"plan bytes")
    source = {"path": onnx.name, "sha256": read_sidecar(onnx).sha256}
    write_sidecar(plan, dataclasses.replace(read_sidecar(onnx), artefact_format="plan", source=source, build=build))
    return plan


@pytest.mark.skipif(not MISSING, reason="this machine can run TensorRT plans")
def test_a_plan_without_an_nvidia_gpu_is_refused_in_one_line_before_the_camera(
    onnx_engine: Path, tmp_path: Path
) -> None:
    plan = fake_plan(onnx_engine, tmp_path, PLAN_BUILD)
    with pytest.raises(EngineError, match="needs an NVIDIA GPU with TensorRT"):
        open_engine(plan)
    camera = f"folder://{tmp_path / 'no-such-folder'}"  # a source error here would mean the camera came first
    result = subprocess.run(
        station(str(plan), camera, free_endpoint(), "--threshold", "0.5"), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-run: error: memseg.plan is a TensorRT plan"), lines
    assert "needs an NVIDIA GPU with TensorRT" in lines[0] and "(--engine memseg.onnx)" in lines[0]
    assert "no-such-folder" not in lines[0]


def test_edge_build_records_the_batch_profile_and_strong_typing(onnx_engine: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is not installed (pip install .[tensorrt-rtx])")
    from edge.cli import build_main
    from edge.tensorrt_build import BuildError, build_plan

    plan = tmp_path / "memseg.plan"
    build_plan(onnx_engine, plan, target_sm="86", workspace_mb=256, opt_batch=2)
    build = read_sidecar(plan).build
    assert build["batch_profile"] == {"min": 1, "opt": 2, "max": 4}
    assert build["strongly_typed"] is True  # TensorRT-RTX builds strongly typed networks only
    assert "strongly typed, batch 1…4 tuned for 2" in plan.with_name("memseg.plan.build.log").read_text()
    assert build_main(["--onnx", str(onnx_engine), "--out", str(plan), "--target-sm", "86"]) == 0
    assert read_sidecar(plan).build["batch_profile"]["opt"] == 1  # the default: one part at a time
    with pytest.raises(BuildError, match="--opt-batch 5: memseg.onnx takes batches of 1 to 4"):
        build_plan(onnx_engine, plan, target_sm="86", opt_batch=5)


class FakeAllocation:
    """Device memory of the stand-in: bytes held on the host, usable only with a context current."""

    def __init__(self, cuda: FakeCuda, nbytes: int) -> None:
        self.cuda, self.data, self.live = cuda, np.zeros(nbytes, np.uint8), True
        cuda.allocations[id(self)] = self

    def __int__(self) -> int:
        return id(self)

    def free(self) -> None:
        self.cuda.require_context("cuMemFree")
        self.live = False


class FakeContext:
    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda = cuda

    def push(self) -> None:
        self.cuda.stack().append(self)

    def detach(self) -> None:
        raise AssertionError("the primary context is detached: pycuda would leave it current on this thread")


class FakeCuda(types.ModuleType):
    """pycuda.driver as far as the TensorRT engine uses it. Each thread has its own context stack, as in CUDA;
    every call that needs a context checks that one is current on the calling thread."""

    def __init__(self) -> None:
        super().__init__("pycuda.driver")
        self.stacks: dict[int, list[FakeContext]] = {}
        self.allocations: dict[int, FakeAllocation] = {}
        self.retained = 0
        self.Context = types.SimpleNamespace(pop=lambda: self.stack().pop())

    def stack(self) -> list[FakeContext]:
        return self.stacks.setdefault(threading.get_ident(), [])

    def require_context(self, call: str) -> None:
        assert self.stack(), f"{call} on a thread without a current CUDA context"

    def init(self) -> None:
        pass

    def Device(self, ordinal: int) -> types.SimpleNamespace:  # noqa: N802 (pycuda's name)
        return types.SimpleNamespace(compute_capability=lambda: (8, 7), retain_primary_context=self.retain)

    def retain(self) -> FakeContext:
        self.retained += 1
        return FakeContext(self)

    def Stream(self) -> types.SimpleNamespace:  # noqa: N802 (pycuda's name)
        self.require_context("cuStreamCreate")
        return types.SimpleNamespace(handle=7, synchronize=lambda: self.require_context("cuStreamSynchronize"))

    def pagelocked_empty(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        self.require_context("cuMemHostAlloc")
        return np.zeros(shape, dtype)

    def mem_alloc(self, nbytes: int) -> FakeAllocation:
        self.require_context("cuMemAlloc")
        return FakeAllocation(self, nbytes)

    def memcpy_htod_async(self, device: FakeAllocation, host: np.ndarray, stream) -> None:
        self.require_context("cuMemcpyHtoDAsync")
        device.data[: host.nbytes] = host.reshape(-1).view(np.uint8)

    def memcpy_dtoh_async(self, host: np.ndarray, device: FakeAllocation, stream) -> None:
        self.require_context("cuMemcpyDtoHAsync")
        host.reshape(-1).view(np.uint8)[:] = device.data[: host.nbytes]


def fake_tensorrt(cuda: FakeCuda, frame_shape: tuple[int, ...], map_size: int) -> types.ModuleType:
    """TensorRT as far as the engine uses it; its "plan" scores a frame by its mean pixel / 255 and maps it to a
    constant map of that value. A plan whose bytes are b"refused" does not deserialise."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    trt.Builder = object
    trt.nptype = np.dtype
    shapes = {"frames": (-1, *frame_shape), "score": (-1,), "anomaly_map": (-1, 1, map_size, map_size)}
    dtypes = {"frames": "uint8", "score": "float32", "anomaly_map": "float32"}

    class ILogger:
        ERROR, INTERNAL_ERROR = "error", "internal error"

        def __init__(self) -> None:
            pass

    class Execution:
        def __init__(self) -> None:
            cuda.require_context("createExecutionContext")
            self.addresses: dict[str, int] = {}
            self.batch = 0

        def set_tensor_address(self, name: str, address: int) -> None:
            self.addresses[name] = address

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            self.batch = shape[0]
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            cuda.require_context("enqueueV3")
            memory = {name: cuda.allocations[address].data for name, address in self.addresses.items()}
            frames = memory["frames"][: self.batch * int(np.prod(frame_shape))].reshape(self.batch, -1)
            score = (frames.mean(axis=1) / 255).astype(np.float32)
            memory["score"][: score.nbytes] = score.view(np.uint8)
            maps = np.repeat(score, map_size * map_size)
            memory["anomaly_map"][: maps.nbytes] = maps.view(np.uint8)
            return True

    class CudaEngine:
        num_io_tensors = 3

        def get_tensor_name(self, index: int) -> str:
            return list(shapes)[index]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return shapes[name]

        def get_tensor_dtype(self, name: str) -> str:
            return dtypes[name]

        def create_execution_context(self) -> Execution:
            return Execution()

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.engine_host_code_allowed = True

        def deserialize_cuda_engine(self, data: bytes) -> CudaEngine | None:
            cuda.require_context("deserializeCudaEngine")
            assert not self.engine_host_code_allowed
            return None if data == b"refused" else CudaEngine()

    trt.ILogger, trt.Runtime = ILogger, Runtime
    return trt


@pytest.fixture
def stand_in_gpu(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    """pycuda and TensorRT replaced by the stand-ins above, and one "GPU" reported by the driver."""
    cuda = FakeCuda()
    pycuda = types.ModuleType("pycuda")
    pycuda.__spec__ = importlib.machinery.ModuleSpec("pycuda", None)
    pycuda.driver = cuda
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(cuda, (64, 64, 3), 64))
    monkeypatch.setattr(tensorrt_engine, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(tensorrt_engine, "_primary_contexts", {})
    return cuda


def test_the_engine_pushes_the_primary_context_only_around_its_own_work(
    stand_in_gpu: FakeCuda, onnx_engine: Path, tmp_path: Path
) -> None:
    cuda = stand_in_gpu
    plan = fake_plan(onnx_engine, tmp_path, PLAN_BUILD)
    frames = np.stack([np.full((64, 64, 3), value, np.uint8) for value in (51, 102, 204)])
    results = []
    for _ in range(2):  # a second activation reuses the primary context retained by the first
        with open_engine(plan) as engine:
            assert cuda.stack() == []  # nothing left current on the activating thread
            worker = threading.Thread(target=lambda: results.append((engine.infer(frames), cuda.stack() == [])))
            worker.start()
            worker.join()
            results.append((engine.infer(frames[:1]), cuda.stack() == []))
            listed = engine.infer(list(frames[::-1]))  # gathered straight into the pinned input buffer
            assert np.allclose(listed.score, [0.8, 0.4, 0.2])
            assert np.allclose(engine.infer(frames[1:]).score, [0.4, 0.8])  # an array after a list
        assert cuda.stack() == [] and not any(a.live for a in cuda.allocations.values())
    assert cuda.retained == 1 and all(popped for _, popped in results)
    assert np.allclose(results[0][0].score, [0.2, 0.4, 0.8]) and results[0][0].anomaly_map.shape == (3, 1, 64, 64)
    assert np.allclose(results[1][0].score, [0.2]) and np.allclose(results[1][0].anomaly_map, 0.2)


def test_a_refused_or_foreign_plan_leaves_no_context_current(
    stand_in_gpu: FakeCuda, onnx_engine: Path, tmp_path: Path
) -> None:
    cuda = stand_in_gpu
    foreign = fake_plan(onnx_engine, tmp_path / "foreign", {**PLAN_BUILD, "compute_capability": "9.0"})
    with pytest.raises(EngineError, match="built for compute capability 9.0 and this GPU is 8.7. Rebuild"):
        open_engine(foreign).activate()
    assert cuda.retained == 0  # refused before the GPU is touched
    refused = fake_plan(onnx_engine, tmp_path / "refused", PLAN_BUILD)
    refused.write_bytes(b"refused")
    write_sidecar(refused, read_sidecar(refused, verify=False))
    with pytest.raises(EngineError, match="TensorRT refused memseg.plan"):
        open_engine(refused).activate()
    assert cuda.stack() == [] and not any(a.live for a in cuda.allocations.values())


def widest_gap_threshold(scores: np.ndarray) -> float:
    """A threshold in the widest gap between the middle half of the scores, so that a verdict flips only for a
    difference larger than half that gap."""
    ordered = np.sort(scores)
    middle = ordered[len(ordered) // 4 : 3 * len(ordered) // 4 + 1]
    i = int(np.argmax(np.diff(middle)))
    return float((middle[i] + middle[i + 1]) / 2)


@pytest.mark.skipif(
    bool(MISSING), reason=f"needs an NVIDIA GPU with TensorRT and pycuda: {tensorrt_engine.in_words(MISSING)}"
)
def test_a_built_plan_agrees_with_onnx_runtime_on_the_same_frames(
    onnx_engine: Path, part_folder: Path, tmp_path: Path
) -> None:
    import pycuda.driver as cuda

    from edge.tensorrt_build import RTX_TARGETS, build_plan

    trt = tensorrt_engine.import_tensorrt()
    target_sm = None
    if tensorrt_engine.library_name(trt) == "tensorrt_rtx":
        cuda.init()
        target_sm = "{}{}".format(*cuda.Device(0).compute_capability())
        if target_sm not in RTX_TARGETS:
            pytest.skip(f"TensorRT-RTX builds for {', '.join(RTX_TARGETS)}, not this GPU's SM{target_sm}")
    plan = tmp_path / "memseg.plan"
    build_plan(onnx_engine, plan, target_sm=target_sm, workspace_mb=1024)
    images = [cv2.imread(str(p)) for p in sorted(part_folder.glob("*.png"))]
    frames = np.stack([cv2.cvtColor(i, cv2.COLOR_BGR2RGB) for i in images if i is not None and i.shape[:2] == (64, 64)])
    with open_engine(onnx_engine) as reference:
        expected = np.concatenate([reference.infer(frames[i : i + 4]).score for i in range(0, len(frames), 4)])
    with open_engine(plan) as engine:
        got: list[np.ndarray] = []
        worker = threading.Thread(  # the pipeline infers on its own thread
            target=lambda: got.extend(engine.infer(frames[i : i + 4]).score for i in range(0, len(frames), 4))
        )
        worker.start()
        worker.join()
        single = engine.infer(frames[:1]).score  # batch 1, from the activating thread
    scores = np.concatenate(got)
    threshold = widest_gap_threshold(expected)
    difference = float(np.abs(scores - expected).max())
    print(f"TensorRT vs ONNX Runtime on {len(frames)} frames: max |Δscore| {difference:.2e}")
    assert difference < 5e-3 and abs(float(single[0]) - float(expected[0])) < 5e-3
    assert np.array_equal(scores >= threshold, expected >= threshold)
