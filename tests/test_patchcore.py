"""PatchCore: the folded nearest-neighbour search equals a direct one, the coreset covers the data, the re-weighting
is the paper's, and a model built in seconds exports, agrees with ONNX Runtime and builds with TensorRT-RTX."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edge.sidecar import FrameSpec, read_sidecar
from export.data.batches import to_batch
from export.errors import UserError
from export.exporter import export_artefact
from export.models.patchcore import network as patchcore_network
from export.models.patchcore.network import PatchCore, PatchCoreConfig, nearest_in_bank
from export.nn.coreset import greedy_coreset
from export.nn.trunk import untrained_trunk
from export.verify import verify

pytest.importorskip("timm")
FRAME = FrameSpec(64, 64, "rgb8", max_batch=2)


def random_model(bank_vectors: int = 5000, reweight: bool = False) -> PatchCore:
    """A PatchCore on a random EfficientNet-Lite0 with a random bank (more than one bank chunk)."""
    config = PatchCoreConfig(image_size=64, reweight=reweight, reweight_neighbours=4)
    trunk = untrained_trunk("efficientnet_lite0")
    bank = torch.randn(bank_vectors, 64, generator=torch.Generator().manual_seed(0))
    return PatchCore(config, trunk, bank).eval()


def test_folded_distance_equals_a_direct_cdist() -> None:
    model = random_model()
    assert model.chunks == 2
    features = torch.randn(2, 64, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        distance, index = model.nearest(features)
    direct = torch.cdist(features.permute(0, 2, 3, 1).reshape(-1, 64), model.bank)
    expected, expected_index = direct.min(dim=1)
    torch.testing.assert_close(distance.flatten(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(index.flatten(), expected_index)
    bank_member = model.bank[4321].view(1, 64, 1, 1)
    member_distance, member_index = model.nearest(bank_member)
    assert float(member_distance) == 0.0 and int(member_index) == 4321


def test_map_is_the_smoothed_patch_distance_and_non_negative() -> None:
    model = random_model(100)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        amap = model.anomaly_map(x)
        distance, _ = model.nearest(model.patch_features(x))
    assert amap.shape == (2, 1, 64, 64) and amap.dtype == torch.float32 and float(amap.min()) >= 0.0
    assert float(amap.max()) <= float(distance.max()) + 1e-5  # smoothing averages, never adds
    assert model.score_kind == "distance" and model.score_head.kind == "max"


def test_border_patches_average_with_the_zero_padding() -> None:
    """A corner patch's 3×3 average is its 4 pixels over 9 (the padding counted), an edge patch's 6 over 9; inside,
    both poolings agree. ``pool_zero_padding=False`` divides by the pixels inside the image instead."""
    from export.models.patchcore.network import patch_features

    trunk = untrained_trunk("efficientnet_lite0").eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        padded = patch_features(trunk, x, (1, 2), zero_padding=True)
        unpadded = patch_features(trunk, x, (1, 2), zero_padding=False)
        level1 = trunk.features(x, deepest=1)[1]
    first = level1.shape[1]
    torch.testing.assert_close(padded[0, :first, 0, 0], level1[0, :, :2, :2].sum(dim=(1, 2)) / 9)
    torch.testing.assert_close(unpadded[0, :first, 0, 0], level1[0, :, :2, :2].mean(dim=(1, 2)))
    torch.testing.assert_close(padded[0, :first, 0, 5], level1[0, :, :2, 4:7].sum(dim=(1, 2)) / 9)
    torch.testing.assert_close(padded[:, :first, 1:-1, 1:-1], unpadded[:, :first, 1:-1, 1:-1])
    model = PatchCore(PatchCoreConfig(image_size=64), trunk, torch.randn(10, padded.shape[1]))
    with torch.no_grad():
        torch.testing.assert_close(model.patch_features(x), padded)


def test_greedy_coreset_covers_every_cluster_and_beats_random_picks() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 50, (6, 16))
    sizes = [2000, 1000, 500, 200, 50, 5]
    points = torch.from_numpy(
        np.concatenate([c + rng.normal(0, 1, (n, 16)) for c, n in zip(centres, sizes, strict=True)])
    )
    picked = greedy_coreset(points.float(), 6, np.random.default_rng(1), projection=8)
    assert len(set(picked.tolist())) == 6
    cluster = np.repeat(np.arange(6), sizes)
    assert sorted(cluster[picked.numpy()].tolist()) == [0, 1, 2, 3, 4, 5]
    picked = greedy_coreset(points.float(), 60, np.random.default_rng(1), projection=16)
    random = torch.from_numpy(np.random.default_rng(2).choice(len(points), 60, replace=False))
    radius = lambda idx: float(torch.cdist(points, points[idx]).min(dim=1).values.max())  # noqa: E731
    assert radius(picked) < radius(random)
    assert torch.equal(picked, greedy_coreset(points.float(), 60, np.random.default_rng(1), projection=16))


def test_reweighting_is_the_papers_weight_on_the_worst_patch() -> None:
    model = random_model(300, reweight=True)
    assert torch.equal(model.bank_neighbours[:, 0], torch.arange(300))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = model.patch_features(x)
        distance, index = model.nearest(features)
        weighted = model.anomaly_map(x)
        plain = model.smooth(distance)
    worst = int(distance.flatten().argmax())
    patch = features.flatten(2)[0, :, worst]
    nearest = int(index.flatten()[worst])
    support = torch.cdist(model.bank[nearest][None], model.bank)[0].argsort()[:4]
    spread = (model.bank[support] - patch).norm(dim=1)
    weight = 1 - torch.softmax(spread, dim=0)[0]
    torch.testing.assert_close(weighted, plain * weight, rtol=1e-5, atol=1e-6)
    assert torch.equal(nearest_in_bank(model.bank, 4)[nearest], support)


def test_a_bank_too_large_for_the_target_is_refused_with_the_fix(monkeypatch) -> None:
    model = random_model(5000)
    monkeypatch.setattr(patchcore_network, "MAX_BANK_MB", 1.0)
    with pytest.raises(UserError, match=r"smaller --coreset \(at most 4096 vectors"):
        model.prepare_for_export("fp32")
    with pytest.raises(UserError, match="fp32 only"):
        random_model(10).prepare_for_export("fp16")


def test_the_bank_never_exceeds_max_bank(brick_dataset: Path, tmp_path: Path) -> None:
    from export.train import train

    values = {"image_size": 64, "coreset": 0.5, "max_bank": 100}
    summary = train("patchcore", brick_dataset, tmp_path / "p.pt", values, device="cpu", progress=False)
    assert summary["patch_features"] == 12 * 16 * 16 and summary["bank_vectors"] == 100
    assert summary["pooled_patches"] == 4 * 12 * 16 * 16  # drawn from the dihedral views, four times their own
    with pytest.raises(UserError, match="--max-bank"):
        train("patchcore", brick_dataset, tmp_path / "q.pt", {"max_bank": 0}, device="cpu", progress=False)


def test_dihedral_views_bring_every_turn_and_mirror_image_of_the_good_images_into_the_bank() -> None:
    from export.models.patchcore.training import PatchCoreTraining, train_patchcore
    from export.models.registry import TrainRun

    image = cv2.resize(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8), (64, 64))
    config = PatchCoreConfig(image_size=64)

    def trained(views: str, view_pool: float) -> tuple[PatchCore, dict]:
        options = PatchCoreTraining(coreset=1.0, views=views, view_pool=view_pool, backbone_weights="random")
        run = TrainRun(config, options, [image], torch.device("cpu"), np.random.default_rng(0), progress=False)
        torch.manual_seed(0)  # the same random trunk each time
        return train_patchcore(run)

    def mean_distance(model: PatchCore, picture: np.ndarray) -> float:
        with torch.no_grad():
            return float(model.nearest(model.patch_features(to_batch([np.ascontiguousarray(picture)])))[0].mean())

    as_taken, summary = trained("as-taken", 8.0)
    dihedral, dihedral_summary = trained("dihedral", 8.0)
    assert summary["pooled_patches"] == summary["bank_vectors"] == 16 * 16  # one view: the pool is ignored
    assert dihedral_summary["pooled_patches"] == 8 * 16 * 16 and dihedral_summary["bank_vectors"] == 16 * 16
    assert trained("dihedral", 2.0)[1]["pooled_patches"] == 2 * 16 * 16
    # the bank keeps an eighth of the dihedral pool, so the views are near it, not in it; another picture is not
    other = cv2.resize(np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8), (64, 64))
    views = [np.rot90(image, k) for k in range(4)] + [image[:, ::-1], np.rot90(image, 3)[::-1]]
    near = [mean_distance(dihedral, view) for view in views]
    assert max(near) < 1.2 * min(near) and max(near) < 0.75 * mean_distance(dihedral, other)
    assert mean_distance(as_taken, image) < 1e-3
    assert all(mean_distance(as_taken, view) > 0.75 * mean_distance(as_taken, other) for view in views[1:])
    with pytest.raises(UserError, match="--views"):
        trained("turned", 2.0)
    for pool in (0.5, 9.0):
        with pytest.raises(UserError, match="--view-pool"):
            trained("dihedral", pool)


@pytest.fixture(scope="module")
def patchcore_checkpoint(brick_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from export.train import train

    out = tmp_path_factory.mktemp("patchcore") / "patchcore.pt"
    values = {"image_size": 64, "coreset": 0.25, "reweight": True}
    return out, train("patchcore", brick_dataset, out, values, device="cpu", seed=0, progress=False)


def test_training_builds_the_bank_without_gradient_steps(patchcore_checkpoint: tuple[Path, dict]) -> None:
    from export.checkpoint import load_model

    path, summary = patchcore_checkpoint
    assert summary["patch_features"] == 12 * 16 * 16 and summary["bank_vectors"] == 12 * 16 * 16 // 4
    assert summary["trunk_weights"] == "imagenet" and summary["seconds"] < 60
    model, _ = load_model(path)
    assert not any(p.requires_grad for p in model.parameters())
    assert model.details()["trunk_weights_sha256"] == summary["trunk_weights_sha256"]


@pytest.fixture(scope="module")
def patchcore_onnx(patchcore_checkpoint: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("patchcore_onnx") / "patchcore.onnx"
    export_artefact(patchcore_checkpoint[0], out, FRAME, "fp32")
    return out


def test_onnx_runtime_matches_the_checkpoint(
    patchcore_onnx: Path, patchcore_checkpoint: tuple[Path, dict], brick_dataset: Path
) -> None:
    import onnx

    ops = {n.op_type for n in onnx.load(str(patchcore_onnx)).graph.node}
    assert {"ArgMin", "Gather"} <= ops and ({"MatMul", "Gemm"} & ops)
    assert "BatchNormalization" not in ops
    result = verify(patchcore_onnx, patchcore_checkpoint[0], brick_dataset)
    assert result.max_map_difference <= 1e-4 and result.verdicts_differing == 0 and result.passed
    sidecar = read_sidecar(patchcore_onnx)
    assert sidecar.score.kind == "distance" and sidecar.model_details["trunk_weights"] == "imagenet"


def test_evaluation_scores_the_test_set_as_the_exported_graph_does(brick_dataset: Path, tmp_path: Path) -> None:
    """A model working above the camera's size (64 px frames, 128 px model): evaluation upsamples the frames in
    float and averages the map back down as the graph does, so its scores and maps are the line's."""
    from edge.engines import open_engine
    from export.checkpoint import load_model
    from export.data.images import load_test_set
    from export.evaluate import evaluate, predict
    from export.metrics import auroc
    from export.train import train

    checkpoint = tmp_path / "patchcore.pt"
    values = {"image_size": 128, "max_bank": 256, "views": "as-taken"}
    train("patchcore", brick_dataset, checkpoint, values, device="cpu", seed=0, progress=False)
    onnx_path = tmp_path / "patchcore.onnx"
    export_artefact(checkpoint, onnx_path, FrameSpec(64, 64, "rgb8", max_batch=4), "fp32")
    samples = load_test_set(brick_dataset)
    frames = np.stack([s.image for s in samples])
    assert frames.shape[1:] == (64, 64, 3)
    model, _ = load_model(checkpoint, "cpu")
    maps, scores = predict(model, list(frames))
    with open_engine(onnx_path, backend="onnxruntime") as engine:
        line = [engine.infer(frames[i : i + 4]) for i in range(0, len(frames), 4)]
    line_scores = np.concatenate([out.score for out in line])
    line_maps = np.concatenate([out.anomaly_map[:, 0] for out in line])
    assert maps.shape == line_maps.shape == (len(samples), 64, 64)
    np.testing.assert_allclose(scores, line_scores, rtol=1e-5)
    np.testing.assert_allclose(maps, line_maps, rtol=1e-4, atol=1e-4)
    labels = np.array([s.is_defective for s in samples])
    assert evaluate(checkpoint, brick_dataset, device="cpu")["image_auroc"] == pytest.approx(auroc(labels, line_scores))


def test_tensorrt_rtx_builds_the_onnx_for_sm86(patchcore_onnx: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is not installed (pip install .[tensorrt-rtx])")
    from edge.tensorrt_build import build_plan

    plan = tmp_path / "patchcore.plan"
    build_plan(patchcore_onnx, plan, target_sm="86", workspace_mb=512)
    assert plan.stat().st_size > 100_000
    assert read_sidecar(plan).build["compute_capability"] == "8.6"
