"""TrustMAE: the folded top-3 memory read, the trust region, training a few steps, pruning, export parity."""

from __future__ import annotations

import collections
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from edge.sidecar import FrameSpec, read_sidecar
from export.checkpoint import load_model
from export.data.batches import SYMMETRIC, to_batch
from export.data.images import load_good_images
from export.errors import DataError
from export.exporter import export_artefact
from export.models.trustmae.losses import IGNORE, PULL, PUSH, margin_loss, trust_region
from export.models.trustmae.network import TrustMAE, TrustMAEConfig
from export.models.trustmae.training import count_addressed
from export.nn.lpips_distance import LpipsDistance
from export.nn.smoothing import check_sigma
from export.nn.soft_memory import SoftMemory
from export.nn.ssim import ssim_loss
from export.train import train
from export.verify import verify

TINY = {"image_size": 64, "width": 16, "iterations": 3, "batch_size": 4}


@pytest.fixture(scope="module")
def checkpoint(brick_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("trustmae") / "trustmae.pt"
    summary = train("trustmae", brick_dataset, out, TINY, device="cpu", seed=0, progress=False)
    return out, summary


def test_the_folded_top3_read_equals_a_direct_computation() -> None:
    torch.manual_seed(0)
    memory = SoftMemory(items=64, channels=512, top_k=3)
    z = torch.randn(2, 512, 3, 5) * 0.2
    with torch.no_grad():
        read, distances = memory(z)
        vectors = z.permute(0, 2, 3, 1).reshape(-1, 512)
        direct = torch.cdist(vectors.double(), memory.items.double())  # positions × items
        nearest = direct.topk(3, dim=1, largest=False)
        weights = torch.softmax(-nearest.values, dim=1)
        expected = (weights[:, :, None] * memory.items.double()[nearest.indices]).sum(dim=1)
    torch.testing.assert_close(distances.permute(0, 2, 3, 1).reshape(-1, 64).double(), direct, rtol=0, atol=1e-4)
    torch.testing.assert_close(read.permute(0, 2, 3, 1).reshape(-1, 512).double(), expected, rtol=0, atol=1e-5)


def test_the_read_passes_gradients_to_the_items_it_addressed_only() -> None:
    torch.manual_seed(1)
    memory = SoftMemory(items=16, channels=8, top_k=3)
    z = torch.randn(1, 8, 1, 1)
    read, distances = memory(z)
    read.sum().backward()
    touched = memory.items.grad.abs().sum(dim=1) > 0
    assert touched.sum() == 3
    assert set(touched.nonzero().flatten().tolist()) == set(distances.flatten().topk(3, largest=False).indices.tolist())


def test_the_trust_region_pulls_pushes_and_ignores() -> None:
    # δ2 = 1.5·δ1. Item 0 is nearest to positions at 1, 2 and 6 (δ1 = 3, δ2 = 4.5): pull, pull, ignore; item 1 to
    # 10 and 14 (δ1 = 12, δ2 = 18): pull, push; item 2 to 20, 24 and 40 (δ1 = 28, δ2 = 42): pull, pull, push.
    d1 = torch.tensor([1.0, 2.0, 6.0, 10.0, 14.0, 20.0, 24.0, 40.0])
    nearest = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    r = trust_region(d1, nearest, items=3, far=1.5)
    assert r.tolist() == [PULL, PULL, IGNORE, PULL, PUSH, PULL, PULL, PUSH]
    same = trust_region(d1 * 100, nearest, items=3, far=1.5)
    assert same.tolist() == r.tolist()  # scale-free: the latent's size does not change who is pushed
    assert trust_region(d1, nearest, items=3, far=1.0).tolist().count(PUSH) == 0  # far = 1: nothing pushed


def test_the_margin_loss_wants_the_nearest_item_to_stand_out() -> None:
    close = torch.tensor([1.0, 1.2, 5.0]).view(1, 3, 1, 1)
    apart = torch.tensor([1.0, 3.0, 5.0]).view(1, 3, 1, 1)
    assert margin_loss(close).item() == pytest.approx(0.8) and margin_loss(apart).item() == 0.0


def test_ssim_loss_is_zero_for_identical_images_only() -> None:
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert ssim_loss(x, x.flip(-1)).item() > 0.5


def test_the_lpips_distance_is_zero_for_identical_images_and_bounded() -> None:
    extractor = torch.nn.Conv2d(3, 8, 3, padding=1)
    distance = LpipsDistance(lambda t: [extractor(t), extractor(t)[:, :, ::2, ::2]], SYMMETRIC)
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert distance(x, x).abs().max().item() < 1e-6
        d = distance(x, y)
    assert d.shape == (2, 1, 16, 16) and 0 < d.max().item() <= 4.0


def test_the_map_is_the_error_product_smoothed_as_opencv_smooths() -> None:
    model = TrustMAE(TrustMAEConfig(image_size=64, sigma=8.0)).eval()  # σ = 2 px at 64 px
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        reconstruction = model(x)[0]
        smoothed = model.error_map(x, reconstruction)
        raw = (x - reconstruction).pow(2).mean(dim=1, keepdim=True) * model.perceptual(x, reconstruction)
    reference = [cv2.GaussianBlur(m[0].numpy(), (0, 0), 2.0, borderType=cv2.BORDER_REFLECT_101) for m in raw]
    torch.testing.assert_close(smoothed[:, 0], torch.as_tensor(np.stack(reference)), rtol=1e-4, atol=1e-6)
    unsmoothed = TrustMAE(TrustMAEConfig(image_size=64, sigma=0.0)).eval()
    unsmoothed.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(unsmoothed.error_map(x, reconstruction), raw)


def test_a_smoothing_that_reaches_past_the_map_is_refused_with_the_limit() -> None:
    check_sigma(63.5, 128)  # radius 127 px on a 128 px map: the widest reflect padding allows
    for sigma in (-1.0, 63.9):
        with pytest.raises(DataError, match=r"--sigma .* at most 63\.5"):
            check_sigma(sigma, 128)


def test_training_a_few_steps_writes_a_pruned_memory(checkpoint: tuple[Path, dict]) -> None:
    path, summary = checkpoint
    model, payload = load_model(path)
    kept = model.memory.items.shape[0]
    assert summary["memory_items_kept"] == kept and 3 <= kept <= 64
    assert (model.memory.addressed > 0).all()
    assert set(summary["trust_cases"]) == {"pull", "push", "ignore"}
    assert sum(summary["trust_cases"].values()) == pytest.approx(1.0)
    assert model.details()["trunk_weights"] == "imagenet" and model.score_kind == "distance"
    assert set(summary["terms_last"]) == {"loss", "reconstruction", "ssim", "perceptual", "margin", "trust"}


def test_pruning_keeps_the_function_on_the_training_images(brick_dataset: Path) -> None:
    torch.manual_seed(0)
    config = TrustMAEConfig(image_size=64, width=16)
    model = TrustMAE(config).eval()
    images = load_good_images(brick_dataset, 64)
    x = to_batch(images, "cpu", SYMMETRIC)
    count_addressed(model, images, torch.device("cpu"))
    with torch.no_grad():
        before = model.anomaly_map(x)
        kept = model.memory.prune()
        after = model.anomaly_map(x)
    assert kept < 64
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_adversarial_training_runs_behind_its_flag(brick_dataset: Path, tmp_path: Path) -> None:
    values = {**TINY, "iterations": 1, "adversarial": True}
    summary = train("trustmae", brick_dataset, tmp_path / "gan.pt", values, device="cpu", progress=False)
    assert {"adversarial", "feature_matching", "discriminator"} <= set(summary["terms_last"])


@pytest.fixture(scope="module")
def onnx_path(checkpoint: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trustmae_onnx") / "trustmae.onnx"
    export_artefact(checkpoint[0], path, FrameSpec(64, 64, "rgb8"), "fp32")
    return path


def test_the_onnx_reads_the_memory_without_gather_and_agrees_with_the_checkpoint(
    onnx_path: Path, checkpoint: tuple[Path, dict], brick_dataset: Path
) -> None:
    ops = collections.Counter(n.op_type for n in onnx.load(str(onnx_path)).graph.node)
    assert ops["TopK"] == 2 and ops["Softmax"] == 1 and ops["Sqrt"] >= 1  # the memory's k items, the score's pixels
    assert "Gather" not in ops and "GatherElements" not in ops and "BatchNormalization" not in ops
    result = verify(onnx_path, checkpoint[0], brick_dataset)
    assert result.images == 12 and result.max_map_difference <= 1e-4 and result.passed
    sidecar = read_sidecar(onnx_path)
    assert sidecar.to_dict()["model_details"]["memory_items_kept"] == load_model(checkpoint[0])[0].memory.items.shape[0]


def test_fp16_onnx_gives_the_fp32_verdicts(checkpoint: tuple[Path, dict], brick_dataset: Path, tmp_path: Path) -> None:
    path = tmp_path / "trustmae_fp16.onnx"
    export_artefact(checkpoint[0], path, FrameSpec(64, 64, "rgb8"), "fp16")
    result = verify(path, checkpoint[0], brick_dataset)
    assert result.non_finite == 0 and result.verdicts_differing == 0 and result.passed
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["TopK"] == 2 and "Gather" not in ops
    assert read_sidecar(path).build["fp16_max_relative_error"] < 0.1


def test_tensorrt_rtx_builds_the_onnx_for_sm86(onnx_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is not installed (pip install .[tensorrt-rtx])")
    from edge.tensorrt_build import build_plan

    plan = tmp_path / "trustmae.plan"
    build_plan(onnx_path, plan, target_sm="86", workspace_mb=512)
    sidecar = read_sidecar(plan)
    assert plan.stat().st_size > 100_000 and sidecar.build["compute_capability"] == "8.6"
    assert sidecar.source["sha256"] == read_sidecar(onnx_path).sha256


def test_edge_dataset_mixes_defective_parts_into_train_good(tmp_path: Path) -> None:
    from export.cli import dataset_main

    sizes = ["--texture", "gravel", "--image-size", "32", "--train", "10", "--test-good", "1", "--crop", "64"]
    sizes += ["--test-per-defect", "1"]
    assert dataset_main(["--out", str(tmp_path / "clean"), *sizes]) == 0
    assert dataset_main(["--out", str(tmp_path / "dirty"), *sizes, "--contamination", "0.4"]) == 0
    masks = sorted((tmp_path / "dirty" / "train_contamination").rglob("*_mask.png"))
    assert len(masks) == 4 and {m.parent.name for m in masks} == {"scratch", "crack", "stain", "shape"}
    dirty = {m.name.removesuffix("_mask.png") for m in masks}
    for image in sorted((tmp_path / "clean" / "train" / "good").glob("*.png")):
        other = cv2.imread(str(tmp_path / "dirty" / "train" / "good" / image.name))
        clean = cv2.imread(str(image))
        if image.stem in dirty:
            mask = cv2.imread(str(next(m for m in masks if m.name.startswith(image.stem))), cv2.IMREAD_GRAYSCALE) > 0
            assert mask.any() and (other != clean).any(axis=2)[~mask].sum() == 0 and (other != clean)[mask].any()
        else:
            assert (other == clean).all()
    assert (tmp_path / "clean" / "train_contamination").exists() is False
    assert dataset_main(["--out", str(tmp_path / "bad"), *sizes, "--contamination", "1.5"]) == 2
