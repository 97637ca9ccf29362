"""INT8 export: a QDQ ONNX calibrated on good images that runs on ONNX Runtime and OpenVINO with the memory lookup
and the score in FP32, and the fidelity gate that writes a reduced-precision artefact only when its verdicts stay."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge.bench import cpu_description
from edge.engines import open_engine
from edge.sidecar import FrameSpec, read_sidecar
from export.cli import export_main, verify_main
from export.errors import UserError
from export.gate import export_checked
from export.verify import CheckpointEngine, run_all, verification_set

FRAME = FrameSpec(64, 64, "rgb8", max_batch=4)
FP32_OPS = {"ArgMin", "GatherND", "ReduceSum", "Softmax", "TopK"}  # the memory lookup and the score


@pytest.fixture(scope="module")
def int8_artefact(tiny_checkpoint: tuple[Path, dict], brick_dataset: Path, tmp_path_factory) -> Path:
    """The tiny checkpoint as INT8, written with --force: a 40-iteration model's maps are nearly flat, so its pixel
    AUROC moves with any rounding and the gate's verdict on it says nothing; the numbers are still recorded."""
    out = tmp_path_factory.mktemp("int8") / "memseg.onnx"
    export_checked(
        tiny_checkpoint[0],
        out,
        FRAME,
        "int8",
        calibration_images=brick_dataset / "train" / "good",
        verify_data=brick_dataset,
        threshold=0.5,
        force=True,
    )
    return out


def test_int8_keeps_the_memory_lookup_and_the_score_in_fp32(int8_artefact: Path) -> None:
    sidecar = read_sidecar(int8_artefact)
    assert sidecar.precision == "int8" and sidecar.outputs["anomaly_map"]["dtype"] == "float32"
    assert sidecar.build["int8_ops"]["Conv"] == sidecar.build["int8_layers"] > 0
    assert set(sidecar.build["fp32_ops"]) >= FP32_OPS and not FP32_OPS & set(sidecar.build["int8_ops"])
    model = onnx.load(str(int8_artefact))
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in FP32_OPS:  # none of them reads or writes INT8
            assert all(producers.get(i) is None or producers[i].op_type != "QuantizeLinear" for i in node.input)
    quantised = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert quantised and sidecar.build["calibration_frames"] == 2 * 12  # 12 good images, each also with a defect


def test_int8_runs_on_onnx_runtime_and_openvino_close_to_fp32(
    int8_artefact: Path, tiny_checkpoint: tuple[Path, dict], brick_dataset: Path
) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")
    images = verification_set(brick_dataset, FRAME, 64)
    reference = run_all(CheckpointEngine(tiny_checkpoint[0], FRAME), images.frames)
    outputs = {b: run_all(open_engine(int8_artefact, backend=b), images.frames) for b in ("onnxruntime", "openvino")}
    for out in outputs.values():
        assert np.isfinite(out.score).all() and np.isfinite(out.anomaly_map).all()
        assert np.abs(out.score - reference.score).max() < 0.1
    # Both runtimes read the same QDQ graph: they differ by rounding, far less than INT8 differs from FP32, where
    # the CPU multiplies INT8 with VNNI or AMX (without, their kernels saturate intermediate sums differently).
    if {"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu_description()[1]):
        assert np.abs(outputs["onnxruntime"].score - outputs["openvino"].score).max() < 1e-2
    fidelity = read_sidecar(int8_artefact).build["fidelity"]
    assert [f["backend"] for f in fidelity] == ["onnxruntime", "openvino"]
    assert all(f["precision"] == "int8" and f["images"] == 12 and f["image_auroc"] for f in fidelity)


def test_the_gate_writes_an_artefact_whose_verdicts_stay(
    tiny_checkpoint: tuple[Path, dict], brick_dataset: Path, int8_artefact: Path, tmp_path: Path
) -> None:
    good = verification_set(brick_dataset / "test" / "good", FRAME, 64)
    scores = run_all(open_engine(int8_artefact), good.frames).score
    threshold = float(scores.max()) + 0.2  # far from every score: no rounding can move a verdict
    out = tmp_path / "memseg.onnx"
    sidecar = export_checked(
        tiny_checkpoint[0],
        out,
        FRAME,
        "int8",
        calibration_images=brick_dataset / "train" / "good",
        verify_data=brick_dataset / "test" / "good",  # no ground truth: verdicts only
        threshold=threshold,
    )
    assert read_sidecar(out).sha256 == sidecar.sha256
    assert all(f["passed"] and f["verdicts_differing"] == 0 for f in sidecar.build["fidelity"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memseg.onnx", "memseg.onnx.json"]  # no staging left


def test_the_gate_refuses_an_artefact_whose_verdicts_move(
    tiny_checkpoint: tuple[Path, dict], brick_dataset: Path, int8_artefact: Path, tmp_path: Path
) -> None:
    images = verification_set(brick_dataset / "test" / "good", FRAME, 64)
    int8 = run_all(open_engine(int8_artefact), images.frames).score
    fp32 = run_all(CheckpointEngine(tiny_checkpoint[0], FRAME), images.frames).score
    moved = int(np.argmax(np.abs(int8 - fp32)))
    threshold = float(int8[moved] + fp32[moved]) / 2  # between the two scores of one image: its verdict moves
    arguments = (tiny_checkpoint[0], tmp_path / "memseg.onnx", FRAME, "int8")
    options = {
        "calibration_images": brick_dataset / "train" / "good",
        "verify_data": brick_dataset / "test" / "good",
        "threshold": threshold,
    }
    with pytest.raises(UserError, match=r"memseg.onnx is not written: .*[1-9] verdicts differ at threshold"):
        export_checked(*arguments, **options)
    assert list(tmp_path.iterdir()) == []
    sidecar = export_checked(*arguments, **options, force=True)
    assert not sidecar.build["fidelity"][0]["passed"] and (tmp_path / "memseg.onnx").is_file()


def test_export_cli_defaults_to_fp32_and_names_what_int8_needs(
    tiny_checkpoint: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "memseg.onnx"
    assert export_main(["--checkpoint", str(tiny_checkpoint[0]), "--out", str(out)]) == 0
    assert read_sidecar(out).precision == "fp32"
    code = export_main(["--checkpoint", str(tiny_checkpoint[0]), "--out", str(out), "--precision", "int8"])
    error = capsys.readouterr().err
    assert code == 2 and "error: --precision int8 needs --calibration-images DIR" in error
    assert "Traceback" not in error
    code = export_main(["--checkpoint", str(tiny_checkpoint[0]), "--out", str(out), "--target", "gpu"])
    assert code == 2 and "--precision fp16 needs --verify-data DIR" in capsys.readouterr().err


def test_edge_verify_runs_the_candidate_on_openvino_in_bf16(
    onnx_engine: Path, tiny_checkpoint: tuple[Path, dict], brick_dataset: Path, capsys: pytest.CaptureFixture
) -> None:
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")
    if "BF16" not in [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]:
        pytest.skip("this CPU has no BF16 instructions")
    args = ["--engine", str(onnx_engine), "--reference", str(tiny_checkpoint[0]), "--data", str(brick_dataset)]
    verify_main([*args, "--backend", "openvino", "--inference-precision", "bf16"])
    result = json.loads(capsys.readouterr().out)
    assert (result["precision"], result["backend"], result["images"]) == ("bf16", "openvino", 12)
    assert result["map_tolerance"] is None and result["max_score_difference"] < 1e-2


def test_a_memory_bank_is_not_taken_for_a_weight() -> None:
    from onnx import TensorProto, helper, numpy_helper

    from export.quantize import quantised_nodes

    def constant(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array(np.ones(shape, np.float32), name)

    nodes = [
        helper.make_node("MatMul", ["x", "weight"], ["features"], name="layer"),
        helper.make_node("Relu", ["features"], ["relu"], name="relu"),
        helper.make_node("MatMul", ["relu", "bank"], ["similarity"], name="compare"),  # features against a memory
        helper.make_node("ArgMax", ["similarity"], ["nearest"], name="nearest", axis=1),
        helper.make_node("Softmax", ["similarity"], ["address"], name="address"),
        helper.make_node("MatMul", ["address", "items"], ["read"], name="read"),  # a read weighted by a Softmax
    ]
    graph = helper.make_graph(
        nodes,
        "memory",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("read",)]
        + [helper.make_tensor_value_info("nearest", TensorProto.INT64, None)],
        [constant("weight", (4, 4)), constant("bank", (4, 6)), constant("items", (6, 4))],
    )
    assert quantised_nodes(helper.make_model(graph)) == ["layer", "relu"]


def test_int8_for_a_gpu_has_symmetric_activations_and_is_checked_on_onnx_runtime(
    tiny_checkpoint: tuple[Path, dict], brick_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "memseg-int8-gpu.onnx"
    export_checked(
        tiny_checkpoint[0],
        out,
        FrameSpec(64, 64, "rgb8", max_batch=1),
        "int8",
        calibration_images=brick_dataset / "train" / "good",
        verify_data=brick_dataset,
        threshold=0.5,
        force=True,
        target="gpu",
    )
    sidecar = read_sidecar(out)
    assert sidecar.build["symmetric_activations"] and "INT8 symmetric" in sidecar.build["quantisation"]
    assert [r["backend"] for r in sidecar.build["fidelity"]] == ["onnxruntime"]
    model = onnx.load(str(out))
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    zero_points = [constants[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # TensorRT's only form
    with open_engine(out) as engine:
        assert np.isfinite(engine.infer(np.zeros((1, 64, 64, 3), np.uint8)).score).all()
    if importlib.util.find_spec("tensorrt_rtx_bindings") is not None:  # TensorRT's parser and builder take it
        from edge.tensorrt_build import build_plan

        build_plan(out, tmp_path / "memseg-int8.plan", target_sm="86", workspace_mb=256)
        assert read_sidecar(tmp_path / "memseg-int8.plan").precision == "int8"
