"""Export: the folded graph computes what the model does, ONNX agrees with the checkpoint, FP16 stays in range,
the ONNX builds with TensorRT-RTX, and artefacts that do not belong are refused."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from torchvision.models import resnet18

from edge.engines import EngineError, open_engine
from edge.engines.tensorrt_engine import build_mismatch
from edge.sidecar import FrameSpec, SidecarError, read_sidecar, sidecar_path, write_sidecar
from export.checkpoint import load_model
from export.data.batches import to_batch
from export.exporter import export_artefact
from export.graph.deployable import DeployableGraph
from export.graph.folding import fold_batchnorm
from export.graph.frame import FramePreprocess
from export.graph.score_head import top_k_mean
from export.models.memseg.deploy import _rescale_trunk, power_of_two_above
from export.verify import verify

FRAME = FrameSpec(96, 80, "mono8", roi=(8, 4, 80, 72), max_batch=3)


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("artefacts")
    paths = {}
    for precision in ("fp32", "fp16"):
        paths[precision] = out / f"memseg_{precision}.onnx"
        export_artefact(tiny_checkpoint[0], paths[precision], FRAME, precision)
    return paths


def test_batchnorm_folding_keeps_the_function() -> None:
    net = resnet18(weights=None)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        assert fold_batchnorm(net) == 20
        after = net(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_preprocessing_is_an_area_resize_and_imagenet_normalisation() -> None:
    image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    graph = FramePreprocess(FrameSpec(128, 128, "rgb8"), 64)(torch.from_numpy(image[None]))
    area = cv2.resize(image.astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA)
    torch.testing.assert_close(graph, to_batch([area]), rtol=1e-5, atol=1e-5)


def test_preprocessing_reads_pixel_formats_and_the_roi() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (1, 40, 50, 3), dtype=np.uint8)
    as_rgb = FramePreprocess(FrameSpec(50, 40, "rgb8", roi=(10, 5, 32, 32)), 32)(torch.from_numpy(rgb))
    as_bgr = FramePreprocess(FrameSpec(50, 40, "bgr8", roi=(10, 5, 32, 32)), 32)(
        torch.from_numpy(rgb[..., ::-1].copy())
    )
    torch.testing.assert_close(as_rgb, as_bgr)
    torch.testing.assert_close(as_rgb, to_batch([rgb[0, 5:37, 10:42]]))
    grey = rgb[..., 0]
    as_mono = FramePreprocess(FrameSpec(50, 40, "mono8", roi=(10, 5, 32, 32)), 32)(torch.from_numpy(grey))
    torch.testing.assert_close(as_mono, to_batch([np.repeat(grey[0, 5:37, 10:42, None], 3, axis=2)]))


def test_folded_graph_equals_the_model(tiny_checkpoint: tuple[Path, dict]) -> None:
    model, _ = load_model(tiny_checkpoint[0])
    frames = np.random.default_rng(2).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        maps = model.anomaly_map(to_batch(frames))
        score, amap = DeployableGraph(model, FrameSpec(64, 64, "rgb8"))(torch.from_numpy(frames))
    torch.testing.assert_close(amap, maps, rtol=0, atol=1e-4)
    torch.testing.assert_close(score, top_k_mean(maps, 100), rtol=0, atol=1e-5)


def test_a_frame_smaller_than_the_model_gets_its_map_at_its_own_size(tiny_checkpoint: tuple[Path, dict]) -> None:
    """The model works at 64 px on a 32 px frame (upsampled in the graph): the score comes from the 64 px map, the
    map leaves the graph averaged down to 32 px; the sidecar says so."""
    from edge.sidecar import read_sidecar

    model, _ = load_model(tiny_checkpoint[0])
    frames = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    frame = FrameSpec(32, 32, "rgb8", max_batch=2)
    with torch.no_grad():
        full = model.anomaly_map(FramePreprocess(frame, 64)(frames))
        score, amap = DeployableGraph(model, frame)(frames)
    assert amap.shape == (2, 1, 32, 32)
    torch.testing.assert_close(amap, torch.nn.functional.avg_pool2d(full, 2), rtol=0, atol=1e-5)
    torch.testing.assert_close(score, top_k_mean(full, 100), rtol=0, atol=1e-5)
    out = tiny_checkpoint[0].parent / "small-frame.onnx"
    export_artefact(tiny_checkpoint[0], out, frame, "fp32")
    assert read_sidecar(out).outputs["anomaly_map"]["shape"] == [-1, 1, 32, 32]


def test_range_rescaling_is_exact(tiny_checkpoint: tuple[Path, dict]) -> None:
    """Dividing the trunk by a power of two and moving it into the weights after it changes no output bit."""
    model, _ = load_model(tiny_checkpoint[0])
    deployed = DeployableGraph(model, FrameSpec(64, 64, "rgb8"), "fp32")
    frames = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    with torch.no_grad():
        before = deployed(frames)
        _rescale_trunk(deployed.model, 2.0**12)
        after = deployed(frames)
    torch.testing.assert_close(after, before, rtol=1e-6, atol=1e-6)


def test_power_of_two_scales() -> None:
    assert power_of_two_above(1.8e5, 256.0) == 1024.0
    assert power_of_two_above(3.0, 256.0) == 1.0
    assert power_of_two_above(0.01, 1.0, shrink_only=False) == 2.0**-6


def test_onnx_takes_uint8_frames_through_a_cast_and_holds_the_memory_lookup(exported: dict[str, Path]) -> None:
    for path in exported.values():
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        (frames,) = model.graph.input
        assert frames.name == "frames" and frames.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        assert [d.dim_value for d in frames.type.tensor_type.shape.dim][1:] == [80, 96]
        assert [n.op_type for n in model.graph.node if "frames" in n.input] == ["Cast"]
        ops = {n.op_type for n in model.graph.node}
        assert {"ArgMin", "TopK", "Softmax"} <= ops and "BatchNormalization" not in ops
        assert [o.name for o in model.graph.output] == ["score", "anomaly_map"]
        assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_onnx_runtime_matches_the_checkpoint(
    exported: dict[str, Path], tiny_checkpoint: tuple[Path, dict], brick_dataset: Path
) -> None:
    result = verify(exported["fp32"], tiny_checkpoint[0], brick_dataset)
    assert result.images == 12
    assert result.max_map_difference < 1e-4 and result.verdicts_differing == 0 and result.passed


def test_fp16_agrees_with_fp32_and_reports_every_layer(
    exported: dict[str, Path], tiny_checkpoint: tuple[Path, dict], brick_dataset: Path
) -> None:
    result = verify(exported["fp16"], tiny_checkpoint[0], brick_dataset)
    assert result.non_finite == 0 and result.max_score_difference < 1e-2 and result.passed
    sidecar = read_sidecar(exported["fp16"])
    assert sidecar.precision == "fp16" and sidecar.outputs["anomaly_map"]["dtype"] == "float16"
    report = exported["fp16"].with_name(exported["fp16"].name + ".precision.txt").read_text()
    assert "decoder.head" in report and sidecar.build["fp16_max_relative_error"] < 0.1


def test_sidecar_describes_the_artefact(exported: dict[str, Path], tiny_checkpoint: tuple[Path, dict]) -> None:
    sidecar = read_sidecar(exported["fp32"])
    assert sidecar.frame == FRAME and sidecar.model == "memseg" and sidecar.model_details["memory_samples"] == 3
    assert sidecar.score.kind == "probability"
    assert sidecar.source["path"] == tiny_checkpoint[0].name and len(sidecar.source["sha256"]) == 64
    assert sidecar.training["iterations" if "iterations" in sidecar.training else "options"]


def test_engine_refuses_frames_it_was_not_exported_for(exported: dict[str, Path]) -> None:
    with open_engine(exported["fp32"]) as engine:
        out = engine.infer(np.zeros((2, 80, 96), np.uint8))
        assert out.score.shape == (2,) and out.anomaly_map.shape == (2, 1, 64, 64)
        with pytest.raises(EngineError, match="takes 80x96 uint8"):
            engine.infer(np.zeros((1, 80, 96, 3), np.uint8))
        with pytest.raises(EngineError, match="1 to 3 frames"):
            engine.infer(np.zeros((4, 80, 96), np.uint8))


def copy_with_sidecar(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    sidecar_path(target).write_text(sidecar_path(source).read_text())
    return target


def test_artefacts_that_do_not_belong_are_refused(exported: dict[str, Path], tmp_path: Path) -> None:
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(exported["fp32"].read_bytes())
    with pytest.raises(EngineError, match="no sidecar"):
        open_engine(lonely)
    tampered = copy_with_sidecar(exported["fp32"], tmp_path / "tampered.onnx")
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(EngineError, match="does not match its sidecar"):
        open_engine(tampered)
    truncated = copy_with_sidecar(exported["fp32"], tmp_path / "truncated.onnx")
    truncated.write_bytes(exported["fp32"].read_bytes()[:100_000])
    sidecar = read_sidecar(truncated, verify=False)
    write_sidecar(truncated, sidecar)  # a consistent pair, but a broken model
    with pytest.raises(EngineError, match="not a valid ONNX file|ONNX Runtime cannot load"), open_engine(truncated):
        pass
    other = tmp_path / "other.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "other",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph), str(other))
    write_sidecar(other, read_sidecar(exported["fp32"]))
    with pytest.raises(EngineError, match="not an edge-export graph"), open_engine(other):
        pass
    with pytest.raises(SidecarError, match="artefact not found"):
        read_sidecar(tmp_path / "missing.onnx")


def test_plan_mismatch_names_the_reason() -> None:
    build = {"library": "tensorrt", "tensorrt_version": "10.3.0", "compute_capability": "8.7"}
    assert build_mismatch(build, "tensorrt", "10.3.1", "8.7") is None
    assert "TensorRT 10.3.0" in build_mismatch(build, "tensorrt", "11.0.0", "8.7")
    assert "compute capability 8.7" in build_mismatch(build, "tensorrt", "10.3.0", "9.0")
    assert "tensorrt_rtx" in build_mismatch(build, "tensorrt_rtx", "1.7.1", "8.7")


def test_export_cli_refuses_a_roi_outside_the_frame(tiny_checkpoint: tuple[Path, dict], tmp_path: Path) -> None:
    code = "import sys; from export.cli import export_main; sys.exit(export_main(sys.argv[1:]))"
    args = ["--checkpoint", str(tiny_checkpoint[0]), "--out", str(tmp_path / "m.onnx"), "--frame-size", "100x80"]
    result = subprocess.run(
        [sys.executable, "-c", code, *args, "--roi", "50,0,64,64"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "does not lie inside the 100x80 frame" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_rtx_builds_the_onnx_for_sm86(exported: dict[str, Path], tmp_path: Path, precision: str) -> None:
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is not installed (pip install .[tensorrt-rtx])")
    from edge.tensorrt_build import build_plan

    plan = tmp_path / f"memseg_{precision}.plan"
    log = build_plan(exported[precision], plan, target_sm="86", workspace_mb=512)
    assert plan.stat().st_size > 1_000_000
    sidecar = read_sidecar(plan)
    assert sidecar.build["library"] == "tensorrt_rtx" and sidecar.build["compute_capability"] == "8.6"
    assert sidecar.source["sha256"] == read_sidecar(exported[precision]).sha256
    layers = log.read_text()
    assert ("HALF" in layers) == (precision == "fp16") or ("Half" in layers) == (precision == "fp16")
    json.dumps(sidecar.to_dict())


def test_pt2_program_runs_in_the_torch_engine_and_agrees_with_onnx(
    tiny_checkpoint: tuple[Path, dict], onnx_engine: Path, tmp_path: Path
) -> None:
    """The torch.export artefact for GPUs without TensorRT, on this machine's device (the CPU where there is no GPU)."""
    pt2 = tmp_path / "memseg.pt2"
    export_artefact(tiny_checkpoint[0], pt2, read_sidecar(onnx_engine).frame, "fp32", "pt2")
    frames = np.random.default_rng(5).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with open_engine(pt2) as torch_engine, open_engine(onnx_engine) as onnx_runtime:
        assert torch_engine.backend == "torch"
        listed = torch_engine.infer(list(frames[::-1]))  # a list of frames, as the pipeline hands them over
        a, b = torch_engine.infer(frames), onnx_runtime.infer(frames)
        with pytest.raises(EngineError, match="frame 2 of 2 of shape .32, 64, 3. uint8, but .* takes 64x64x3 uint8"):
            onnx_runtime.infer([frames[0], frames[1, :32]])
        with pytest.raises(EngineError, match="frame 1 of 1 is a list"):
            onnx_runtime.infer([frames[0].tolist()])
    # on a machine with a GPU this runs there, through CUDA graphs: then the FP32 tolerances of the GPU test below
    score_tolerance, map_tolerance = (1e-4, 1e-3) if torch.cuda.is_available() else (1e-5, 1e-4)
    assert np.abs(a.anomaly_map - b.anomaly_map).max() < map_tolerance
    assert np.abs(a.score - b.score).max() < score_tolerance
    np.testing.assert_allclose(listed.score, a.score[::-1], rtol=0, atol=score_tolerance)
    assert read_sidecar(pt2).artefact_format == "pt2"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_pt2_on_a_gpu_through_cuda_graphs_agrees_with_onnx_runtime(
    precision: str, tolerance: float, tiny_checkpoint: tuple[Path, dict], onnx_engine: Path, tmp_path: Path
) -> None:
    pt2 = tmp_path / f"memseg-{precision}.pt2"
    export_artefact(tiny_checkpoint[0], pt2, read_sidecar(onnx_engine).frame, precision, "pt2")
    frames = np.random.default_rng(6).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with open_engine(pt2) as gpu, open_engine(onnx_engine) as cpu:
        assert gpu._run.device.type == "cuda"
        for batch in (1, 3, 1, 2):  # a graph per batch size; replays after other sizes stay right
            listed = gpu.infer(list(frames[:batch][::-1]))  # gathered straight into the graph's pinned buffer
            a, b = gpu.infer(frames[:batch]), cpu.infer(frames[:batch])
            assert np.isfinite(a.anomaly_map).all() and np.isfinite(a.score).all()
            assert np.abs(a.score - b.score).max() < tolerance
            assert np.abs(listed.score - b.score[::-1]).max() < tolerance
            assert np.abs(a.anomaly_map.astype(np.float32) - b.anomaly_map).max() < 10 * tolerance


class _RunsCode:
    """Unpickling this touches a marker file: the harm a pickled payload could do, made visible."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("payload", ["pickled weight", "pickled sample inputs"])
def test_a_pt2_that_would_unpickle_is_refused_before_torch_reads_it(
    payload: str, tiny_checkpoint: tuple[Path, dict], onnx_engine: Path, tmp_path: Path
) -> None:
    import pickle
    import zipfile

    pt2 = tmp_path / "memseg.pt2"
    export_artefact(tiny_checkpoint[0], pt2, read_sidecar(onnx_engine).frame, "fp32", "pt2")
    sidecar, marker = read_sidecar(pt2), tmp_path / "code-ran"
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(pt2) as source, zipfile.ZipFile(tampered, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if payload == "pickled weight" and info.filename.endswith("_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"].values()))
                first["use_pickle"] = True
                data = json.dumps(config).encode()
            elif payload == "pickled sample inputs" and "/data/sample_inputs/" in info.filename:
                data = pickle.dumps(_RunsCode(marker))
            target.writestr(info, data)
    write_sidecar(tampered, sidecar)  # a consistent-looking artefact: its sidecar matches its bytes
    with pytest.raises(EngineError, match="pickled|without unpickling"):
        open_engine(tampered).activate()
    assert not marker.exists()


def test_onnx_with_external_data_is_refused(exported: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load(str(exported["fp32"]))
    target = tmp_path / "model" / "external.onnx"
    target.parent.mkdir()
    onnx.save(model, str(target), save_as_external_data=True, location="weights.bin", size_threshold=1024)
    write_sidecar(target, read_sidecar(exported["fp32"]))
    with pytest.raises(EngineError, match="tensors in external files"), open_engine(target):
        pass
    malformed = tmp_path / "malformed.onnx"
    malformed.write_bytes(b"\x08\x07\x12\xff\xff\xff not a protobuf")
    write_sidecar(malformed, read_sidecar(exported["fp32"]))
    with pytest.raises(EngineError, match="not a valid ONNX file|ONNX Runtime cannot load"), open_engine(malformed):
        pass
