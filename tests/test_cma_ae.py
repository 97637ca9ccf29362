"""CMA-AE: the sparse memory read (folded and not) against a direct computation, patching, the two training
stages, and the exported graph: ONNX Runtime parity with the checkpoint and a TensorRT-RTX build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from edge.sidecar import FrameSpec, read_sidecar
from export.checkpoint import load_model
from export.exporter import export_artefact
from export.models.cma_ae.network import CMAAE, CMAAEConfig, from_patches, to_patches
from export.nn.sparse_memory import SparseMemory, addressing_entropy
from export.train import train
from export.verify import verify

FRAME = FrameSpec(64, 64, "rgb8", max_batch=4)
TINY = {"image_size": 64, "memory_size": 50, "stage1_iterations": 3, "stage2_iterations": 3, "batch_size": 4}


def direct_read(z: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The memory read of Eq. 2–4 one code at a time, in float64."""
    reads, weights = [], []
    for code in z:
        cosine = np.array([code @ m / (np.linalg.norm(code) * np.linalg.norm(m)) for m in items])
        w = np.exp(cosine) / np.exp(cosine).sum()
        w = np.where(w > 1.0 / len(items), w, 0.0)
        w = w / w.sum()
        weights.append(w)
        reads.append(sum(wi * m for wi, m in zip(w, items, strict=True)))
    return np.stack(reads), np.stack(weights)


def test_memory_read_folded_and_not_equals_the_direct_computation() -> None:
    torch.manual_seed(0)
    memory = SparseMemory(40, 16)
    with torch.no_grad():
        memory.items.mul_(torch.linspace(0.1, 10.0, 40)[:, None])  # unequal norms: the cosine must not see them
    z = 5.0 * torch.randn(6, 16)
    expected, expected_weights = direct_read(z.double().numpy(), memory.items.detach().double().numpy())
    with torch.no_grad():
        read, weights = memory(z)
        memory.fold()
        folded, folded_weights = memory(z)
    assert memory.unit_items is not None and not memory.items.requires_grad
    for r, w in ((read, weights), (folded, folded_weights)):
        np.testing.assert_allclose(w.numpy(), expected_weights, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(r.numpy(), expected, rtol=1e-5, atol=1e-5)
    kept = (expected_weights > 0).sum(axis=1)
    assert (kept < 40).all() and (kept > 0).all()  # the shrinkage dropped some items and kept some


def test_memory_read_never_divides_by_zero() -> None:
    """A zero code has cosine 0 with every item: all weights are 1/N, none is above it, and the read is zero."""
    memory = SparseMemory(8, 4)
    read, weights = memory(torch.zeros(2, 4))
    assert torch.equal(read, torch.zeros(2, 4)) and torch.equal(weights, torch.zeros(2, 8))
    assert addressing_entropy(weights).item() == 0.0
    uniform = torch.full((1, 8), 1 / 8)
    assert addressing_entropy(uniform).item() == pytest.approx(np.log(8), rel=1e-6)


def test_patches_are_the_image_cut_in_row_major_order_and_put_back() -> None:
    x = torch.randn(2, 3, 192, 192)
    patches = to_patches(x, 3)
    assert patches.shape == (18, 3, 64, 64)
    torch.testing.assert_close(patches[3 + 2], x[0, :, 64:128, 128:192], rtol=0, atol=0)
    torch.testing.assert_close(patches[9 + 7], x[1, :, 128:192, 64:128], rtol=0, atol=0)
    torch.testing.assert_close(from_patches(patches, 3), x, rtol=0, atol=0)


def test_anomaly_map_is_the_weighted_feature_residual_per_patch() -> None:
    torch.manual_seed(1)
    model = CMAAE(CMAAEConfig(image_size=128, memory_size=20)).eval()
    one_patch = CMAAE(CMAAEConfig(image_size=64, memory_size=20)).eval()
    one_patch.load_state_dict(model.state_dict() | {"examples": one_patch.examples})  # (none kept, of its size)
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    patch = x[:, :, 64:, :64].contiguous()  # bottom-left patch, on its own
    with torch.no_grad():
        amap = model.anomaly_map(x)
        reconstruction, features, _ = model.reconstruct(patch)
        again = model.encoder.shallow(reconstruction)
        expected = sum(
            w * F.interpolate(((f - g) ** 2).mean(dim=1, keepdim=True), size=(64, 64), mode="bilinear")
            for w, f, g in zip((16 / 276, 64 / 276, 196 / 276), features, again, strict=True)
        )
        alone = one_patch.anomaly_map(patch)
    assert amap.shape == (1, 1, 128, 128) and amap.dtype == torch.float32 and (amap >= 0).all()
    torch.testing.assert_close(amap[:, :, 64:, :64], expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(alone, expected, rtol=1e-5, atol=1e-7)


def test_config_refuses_what_cannot_work() -> None:
    from export.errors import DataError

    with pytest.raises(DataError, match="multiple of 64"):
        CMAAEConfig(image_size=96)
    with pytest.raises(DataError, match="--repair"):
        CMAAEConfig(repair="lstm")


@pytest.fixture(scope="module")
def checkpoint(brick_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cma") / "cma.pt"
    summary = train("cma-ae", brick_dataset, out, TINY, device="cpu", seed=0, progress=False)
    return out, summary


def test_stage_two_keeps_the_memory_and_stage_one_leaves_the_repair_alone(
    brick_dataset: Path, checkpoint: tuple[Path, dict], tmp_path: Path
) -> None:
    stage1_only = tmp_path / "stage1.pt"
    train("cma-ae", brick_dataset, stage1_only, {**TINY, "stage2_iterations": 0}, device="cpu", seed=0, progress=False)
    after_stage1, _ = load_model(stage1_only)
    after_both, _ = load_model(checkpoint[0])
    torch.manual_seed(0)
    untrained = CMAAE(CMAAEConfig(image_size=64, memory_size=50))
    assert torch.equal(after_both.memory.items, after_stage1.memory.items)
    assert not torch.equal(after_stage1.memory.items, untrained.memory.items)
    assert torch.equal(after_stage1.repair.forget.weight, untrained.repair.forget.weight)
    assert not torch.equal(after_both.repair.forget.weight, untrained.repair.forget.weight)
    assert not torch.equal(after_both.decoder.layers[0][0].weight, after_stage1.decoder.layers[0][0].weight)
    summary = checkpoint[1]
    assert len(summary["loss_curve"]["stage1"]) == 3 and len(summary["loss_curve"]["stage2"]) == 3


@pytest.fixture(scope="module")
def exported(checkpoint: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cma-onnx") / "cma.onnx"
    export_artefact(checkpoint[0], path, FRAME, "fp32")
    return path


def test_onnx_patches_in_the_graph_and_holds_the_folded_memory(exported: Path) -> None:
    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert {"Softmax", "Greater", "Transpose", "Reshape", "ConvTranspose", "TopK"} <= set(ops)
    assert "BatchNormalization" not in ops
    sidecar = read_sidecar(exported)
    assert sidecar.model == "cma-ae" and sidecar.score.kind == "distance"
    assert sidecar.model_details == {"memory_size": 50, "patch": 64, "repair": "text", "gate": "sigmoid"}


def test_onnx_runtime_matches_the_checkpoint(
    exported: Path, checkpoint: tuple[Path, dict], brick_dataset: Path
) -> None:
    result = verify(exported, checkpoint[0], brick_dataset)
    assert result.images == 12 and result.non_finite == 0
    assert result.max_map_difference <= 1e-4 and result.max_score_difference <= 1e-4 and result.passed


def test_fp16_onnx_gives_the_fp32_verdicts(checkpoint: tuple[Path, dict], brick_dataset: Path, tmp_path: Path) -> None:
    path = tmp_path / "cma_fp16.onnx"
    export_artefact(checkpoint[0], path, FrameSpec(64, 64, "rgb8"), "fp16")
    result = verify(path, checkpoint[0], brick_dataset)
    assert result.non_finite == 0 and result.verdicts_differing == 0 and result.passed
    assert read_sidecar(path).build["fp16_max_relative_error"] < 0.1


def test_a_checkpoint_without_examples_loads_and_exports_fp32_only(
    checkpoint: tuple[Path, dict], tmp_path: Path
) -> None:
    from export.errors import UserError

    payload = torch.load(checkpoint[0], weights_only=False)
    del payload["state_dict"]["examples"]  # as written before CMA-AE kept example images
    older = tmp_path / "older.pt"
    torch.save(payload, older)
    assert load_model(older)[0].example_images() is None
    export_artefact(older, tmp_path / "older.onnx", FrameSpec(64, 64, "rgb8"), "fp32")
    with pytest.raises(UserError, match="no good images to check FP16 on"):
        export_artefact(older, tmp_path / "older16.onnx", FrameSpec(64, 64, "rgb8"), "fp16")


def test_tensorrt_rtx_builds_the_onnx_for_sm86(exported: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is not installed (pip install .[tensorrt-rtx])")
    from edge.tensorrt_build import build_plan

    plan = tmp_path / "cma.plan"
    build_plan(exported, plan, target_sm="86", workspace_mb=512)
    sidecar = read_sidecar(plan)
    assert plan.stat().st_size > 100_000 and sidecar.build["compute_capability"] == "8.6"
    assert sidecar.source["sha256"] == read_sidecar(exported).sha256
