"""MemSeg's structure: shapes, what trains, the score, the loss."""

import warnings

import pytest
import torch

from export.graph.score_head import top_k_mean
from export.models.memseg.network import MemSeg, MemSegConfig
from export.models.memseg.training import memseg_loss
from export.nn.losses import focal_loss
from export.nn.trunk import build_trunk, untrained_trunk


def small_model(train_trunk: bool = False, size: int = 64) -> MemSeg:
    memory = torch.randint(0, 256, (3, size, size, 3), dtype=torch.uint8)
    model = MemSeg(MemSegConfig(image_size=size, memory_samples=3, train_trunk=train_trunk), untrained_trunk(), memory)
    model.refresh_memory()
    return model


def test_output_is_two_channels_at_input_size_and_map_is_a_probability() -> None:
    model = small_model().eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
        amap = model.anomaly_map(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 2, 64, 64)
    assert amap.shape == (2, 1, 64, 64) and amap.dtype == torch.float32
    assert float(amap.min()) >= 0.0 and float(amap.max()) <= 1.0


def test_memory_features_have_the_paper_shapes_at_256() -> None:
    memory = torch.randint(0, 256, (2, 256, 256, 3), dtype=torch.uint8)
    model = MemSeg(MemSegConfig(memory_samples=2), untrained_trunk(), memory)
    model.refresh_memory()
    assert [tuple(f.shape) for f in model.memory.features()] == [(2, 64, 64, 64), (2, 128, 32, 32), (2, 256, 16, 16)]


def test_frozen_trunk_trains_only_layer4_and_keeps_batchnorm_statistics() -> None:
    model = small_model(train_trunk=False).train()
    for module in model.trunk.frozen_modules():
        assert not any(p.requires_grad for p in module.parameters())
        assert not module.training
    assert all(p.requires_grad for p in model.trunk.layer4.parameters())
    assert model.trunk.layer4.training and model.decoder.training


def test_trainable_trunk_still_keeps_shallow_batchnorm_in_eval_mode() -> None:
    model = small_model(train_trunk=True).train()
    assert all(p.requires_grad for p in model.trunk.layer1.parameters())
    assert not model.trunk.layer1.training


def test_an_input_equal_to_a_memory_image_has_zero_differences() -> None:
    model = small_model().eval()
    from export.data.batches import normalise
    from export.nn.memory import smooth

    image = normalise(model.memory_images[1:2].permute(0, 3, 1, 2))
    features = smooth(model.trunk.shallow(image)[1])
    for d in model.memory.differences(features):
        assert float(d.abs().max()) < 1e-4


def test_score_is_the_mean_of_the_top_100_pixels() -> None:
    maps = torch.rand(3, 32, 32)
    expected = torch.stack([m.flatten().sort(descending=True).values[:100].mean() for m in maps])
    torch.testing.assert_close(top_k_mean(maps, 100), expected)
    tiny = torch.rand(1, 5, 5)
    torch.testing.assert_close(top_k_mean(tiny, 100), tiny.flatten().mean().reshape(1))


def test_loss_is_low_for_a_perfect_prediction_and_focal_down_weights_easy_pixels() -> None:
    mask = torch.zeros(1, 8, 8)
    mask[0, 2:5, 2:5] = 1.0
    perfect = torch.stack([(1 - mask) * 20 - 10, mask * 20 - 10], dim=1)
    wrong = -perfect
    assert float(memseg_loss(perfect, mask)) < 1e-3
    assert float(memseg_loss(wrong, mask)) > 0.5
    easy = torch.tensor([[[[2.0]], [[0.0]]]])  # p(defect) ≈ 0.12 for a good pixel
    bce = -torch.log(1 - torch.softmax(easy, 1)[:, 1]).mean()
    assert float(focal_loss(easy, torch.zeros(1, 1, 1))) < 1e-3 * float(bce)


def test_random_resnet18_warns_and_is_recorded_as_random() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trunk = build_trunk("resnet18")
    assert any("random initialisation" in str(w.message) for w in caught)
    assert trunk.details()["trunk_weights"] == "random"


def test_widths_follow_an_efficientnet_trunk() -> None:
    pytest.importorskip("timm")
    memory = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    config = MemSegConfig(image_size=64, memory_samples=2, trunk="efficientnet_lite0")
    model = MemSeg(config, untrained_trunk("efficientnet_lite0"), memory)
    model.refresh_memory()
    assert [f.shape[1] for f in model.memory.features()] == [24, 40, 112]
    assert [b.project[-1][0].out_channels for b in model.fusion.blocks] == [24, 40, 112]
    assert model.decoder.ups[0][0].in_channels == 320 and model.decoder.head[0][0].in_channels == 16
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    assert model.details()["trunk"] == "efficientnet_lite0"
    with pytest.raises(ValueError, match="config names trunk resnet18"):
        MemSeg(MemSegConfig(image_size=64, memory_samples=2), untrained_trunk("efficientnet_lite0"), memory)


def test_efficientnet_memseg_exports_fp16_without_rescaling_its_trunk(brick_dataset, tmp_path) -> None:
    """A MemSeg on the ImageNet EfficientNet-Lite0 (40 iterations) exports to FP16 ONNX and agrees with itself."""
    pytest.importorskip("timm")
    from edge.sidecar import FrameSpec, read_sidecar
    from export.checkpoint import load_model
    from export.exporter import export_artefact
    from export.graph.deployable import DeployableGraph
    from export.models.memseg.deploy import _rescale_trunk
    from export.train import train
    from export.verify import verify

    checkpoint = tmp_path / "memseg_efficientnet.pt"
    values = {"image_size": 64, "memory_samples": 3, "iterations": 40, "batch_size": 4, "trunk": "efficientnet_lite0"}
    summary = train("memseg", brick_dataset, checkpoint, values, device="cpu", seed=0, progress=False)
    assert summary["trunk"] == "efficientnet_lite0" and summary["trunk_weights"] == "imagenet"
    onnx_path = tmp_path / "memseg_efficientnet_fp16.onnx"
    export_artefact(checkpoint, onnx_path, FrameSpec(64, 64, "rgb8", max_batch=2), "fp16")
    assert read_sidecar(onnx_path).build["trunk_scale"] == 1.0
    result = verify(onnx_path, checkpoint, brick_dataset)
    assert result.non_finite == 0 and result.max_score_difference < 1e-2 and result.passed
    model, _ = load_model(checkpoint)
    with pytest.raises(ValueError, match="does not scale exactly"):
        _rescale_trunk(DeployableGraph(model, FrameSpec(64, 64, "rgb8"), "fp32").model, 2.0)
