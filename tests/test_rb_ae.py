"""RB-AE: trains a few steps, carries its reference, its folded reference attention equals the direct computation,
and the exported graph agrees with the checkpoint (FP32 and FP16) and builds with TensorRT-RTX."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from edge.sidecar import FrameSpec, read_sidecar
from export.checkpoint import load_model, read_checkpoint
from export.data.batches import SYMMETRIC, to_batch
from export.data.images import load_good_images
from export.exporter import export_artefact
from export.models.rb_ae.network import PATCH_SIZES, REPAIRED_LEVELS
from export.nn.reference_attention import ReferenceAttention
from export.train import train
from export.verify import verify

FRAME = FrameSpec(64, 64, "rgb8", max_batch=2)


@pytest.fixture(scope="module")
def checkpoint(brick_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """RB-AE trained for 3 + 3 steps at 64 px on the small brick set."""
    out = tmp_path_factory.mktemp("rb_ae") / "rb_ae.pt"
    values = {"image_size": 64, "phase1_iterations": 3, "phase2_iterations": 3, "batch_size": 2}
    summary = train("rb-ae", brick_dataset, out, values, device="cpu", seed=0, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def exported(checkpoint: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rb_ae_onnx")
    paths = {}
    for precision in ("fp32", "fp16"):
        paths[precision] = out / f"rb_ae_{precision}.onnx"
        export_artefact(checkpoint[0], paths[precision], FRAME, precision)
    return paths


def direct_attention(features: torch.Tensor, reference: torch.Tensor, patch: int, temperature: float) -> torch.Tensor:
    """Eq. 3–5 written out with unfold/fold and pairwise cosines: no stored bank, no SpaceToDepth."""
    p = F.unfold(features, patch, stride=patch)  # B×K²C×N
    b = F.unfold(reference, patch, stride=patch)[0]  # K²C×M
    similarity = F.cosine_similarity(p.transpose(1, 2)[:, :, None, :], b.t()[None, None], dim=-1, eps=1e-8)
    repaired = torch.softmax(temperature * similarity, dim=-1) @ b.t()  # B×N×K²C
    return F.fold(repaired.transpose(1, 2), features.shape[2:], patch, stride=patch)


def test_folded_reference_attention_equals_the_direct_computation() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.relu(torch.randn(2, 16, 8, 8, generator=generator))
    reference = torch.relu(torch.randn(1, 16, 8, 8, generator=generator))
    for patch in (1, 2, 4):
        attention = ReferenceAttention(patch, temperature=10.0)
        attention.store(reference)
        expected = direct_attention(features, reference, patch, 10.0)
        torch.testing.assert_close(attention(features), expected, rtol=1e-5, atol=1e-5)
        # a patch of the reference itself attends mostly to itself
        own = attention.weights(reference)[0]
        assert (own.argmax(dim=1) == torch.arange(own.shape[0])).float().mean() > 0.9


def test_training_chooses_a_reference_that_travels_in_the_checkpoint(
    checkpoint: tuple[Path, dict], brick_dataset: Path
) -> None:
    path, summary = checkpoint
    assert summary["phase1"]["seconds"] > 0 and np.isfinite(summary["phase2"]["loss_last"])
    model, _ = load_model(path)
    images = load_good_images(brick_dataset, 64)
    assert np.array_equal(model.reference_image.numpy(), images[summary["reference_index"]])
    reference = model.encoder(to_batch(model.reference_image.numpy()[None], "cpu", SYMMETRIC))
    x = to_batch(images[:2], "cpu", SYMMETRIC)
    with torch.no_grad():
        features = model.encoder(x)
        for level, attentions in zip(REPAIRED_LEVELS, model.attention, strict=True):
            for patch, attention in zip(PATCH_SIZES, attentions, strict=True):
                expected = direct_attention(features[level], reference[level], patch, 10.0)
                torch.testing.assert_close(attention(features[level]), expected, rtol=1e-4, atol=1e-4)
        anomaly_map = model.anomaly_map(x)
    assert anomaly_map.shape == (2, 1, 64, 64) and anomaly_map.min() >= 0.0 and anomaly_map.max() <= 1.0


def test_onnx_holds_the_folded_attention_and_matches_the_checkpoint(
    exported: dict[str, Path], checkpoint: tuple[Path, dict], brick_dataset: Path
) -> None:
    graph = onnx.load(str(exported["fp32"]))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("MatMul") >= 2 * len(REPAIRED_LEVELS) * len(PATCH_SIZES)
    assert "Softmax" in ops and "BatchNormalization" not in ops
    result = verify(exported["fp32"], checkpoint[0], brick_dataset)
    assert result.images == 12 and result.max_map_difference <= 1e-4 and result.passed
    sidecar = read_sidecar(exported["fp32"])
    assert sidecar.model == "rb-ae" and sidecar.score.kind == "probability"


def test_fp16_gives_the_same_verdicts(exported: dict[str, Path], checkpoint: tuple[Path, dict], brick_dataset: Path):
    result = verify(exported["fp16"], checkpoint[0], brick_dataset)
    assert result.non_finite == 0 and result.verdicts_differing == 0 and result.passed
    assert read_sidecar(exported["fp16"]).outputs["anomaly_map"]["dtype"] == "float16"


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_rtx_builds_for_sm86(exported: dict[str, Path], tmp_path: Path, precision: str) -> None:
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is not installed (pip install .[tensorrt-rtx])")
    from edge.tensorrt_build import build_plan

    plan = tmp_path / f"rb_ae_{precision}.plan"
    build_plan(exported[precision], plan, target_sm="86", workspace_mb=512)
    sidecar = read_sidecar(plan)
    assert plan.stat().st_size > 100_000 and sidecar.build["compute_capability"] == "8.6"
    assert sidecar.source["sha256"] == read_sidecar(exported[precision]).sha256


def test_the_difference_map_weights_the_feature_differences_and_exports_as_a_distance(
    checkpoint: tuple[Path, dict], brick_dataset: Path, tmp_path: Path
) -> None:
    payload = read_checkpoint(checkpoint[0])
    payload["config"] = {**payload["config"], "map": "difference"}
    path = tmp_path / "rb_ae_difference.pt"
    torch.save(payload, path)
    model, _ = load_model(path)
    assert model.score_kind == "distance"
    images = load_good_images(brick_dataset, 64)[:2]
    x = to_batch(images, "cpu", SYMMETRIC)
    with torch.no_grad():
        out = model(x)
        direct = torch.zeros(2, 1, 64, 64)
        for weight, level in zip((0.2, 0.2, 0.6), range(3), strict=True):
            rebuilt = model.encoder(out.reconstruction)[level]
            difference = (out.features[level] - rebuilt).pow(2).mean(dim=1, keepdim=True)
            direct += weight * F.interpolate(difference, size=(64, 64), mode="bilinear")
        blurred = [cv2.GaussianBlur(m[0].numpy(), (0, 0), 2.0, borderType=cv2.BORDER_REFLECT_101) for m in direct]
        torch.testing.assert_close(model.anomaly_map(x)[:, 0], torch.as_tensor(np.stack(blurred)), rtol=1e-4, atol=1e-6)
    onnx_path = tmp_path / "rb_ae_difference.onnx"
    export_artefact(path, onnx_path, FRAME, "fp32")
    result = verify(onnx_path, path, brick_dataset)
    assert result.max_map_difference <= 1e-4 and result.passed
    assert read_sidecar(onnx_path).score.kind == "distance"
