"""MemSeg made ready for export: BatchNorm folded, the ×100 feature scale moved into the weights, and
power-of-two rescaling so every FP16 tensor of a normal part stays in range.

Nothing here computes MemSeg differently: the exported graph runs the model's own forward pass
(:class:`export.models.memseg.network.MemSeg`, which imports this module: the functions here take it as a
plain module), and every change below leaves its function the same in exact
arithmetic. Value ranges are measured on the memory images, leave-one-out (each against the others stands in for a
good part):

* the trunk (a ReLU network with biases: positively homogeneous) is divided by ``trunk_scale``, its consumers'
  weights multiplied by it, the memory bank divided by it;
* each fusion block's attention-weighted conv is divided by ``fusion_scale[i]``, its projection multiplied;
* the spatial-attention products (FP32) are divided by ``attention_scale[i]`` before the cast, the decoder's
  skip weights multiplied.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from export.data.batches import normalise
from export.graph.folding import fold_batchnorm, scale_input_channels

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}

# Largest magnitude we let FP16 see on normal parts: 2^8, which leaves 256× headroom to 65504 for defects.
RANGE_TARGET = 256.0


def power_of_two_above(value: float, target: float, shrink_only: bool = True) -> float:
    """The smallest power of two ``c`` with ``value / c ≤ target`` (``c ≥ 1`` when ``shrink_only``): dividing by
    it is exact in floating point."""
    exponent = math.ceil(math.log2(max(value, 1e-30) / target))
    return 2.0 ** (max(0, exponent) if shrink_only else exponent)


def prepare_for_export(model: nn.Module, precision: str) -> nn.Module:
    """A folded, rescaled copy of ``model`` whose convolutions run at ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    model = copy.deepcopy(model).float().eval()
    model.refresh_memory()
    fold_batchnorm(model)
    _absorb_feature_scale(model)
    calibration = normalise(model.memory_images.permute(0, 3, 1, 2))
    trunk_peak = _peaks(model, calibration)["trunk"]
    # Only a ReLU trunk scales exactly; EfficientNet-Lite0's ReLU6 clips, and bounds its activations instead.
    trunk_scale = power_of_two_above(trunk_peak, RANGE_TARGET) if model.trunk.homogeneous else 1.0
    _rescale_trunk(model, trunk_scale)
    peaks = _peaks(model, calibration)
    fusion_scale = [power_of_two_above(peaks[f"fusion{i}"], RANGE_TARGET) for i in range(3)]
    for block, c in zip(model.fusion.blocks, fusion_scale, strict=True):
        _scale_output(block.conv, 1.0 / c)
        scale_input_channels(block.project[0][0], c)
    attention_scale = [power_of_two_above(peaks[f"attention{i}"], 1.0, shrink_only=False) for i in range(3)]
    model.spatial_attention.scale = attention_scale
    _scale_decoder_skips(model, attention_scale)
    model.dtype = PRECISIONS[precision]
    for part in (model.trunk, model.fusion, model.decoder):
        part.to(model.dtype)
    model.scales = {"trunk_scale": trunk_scale, "fusion_scale": fusion_scale, "attention_scale": attention_scale}
    return model


def _absorb_feature_scale(model: nn.Module) -> None:
    """[II, DI*] × s fed a conv and the attention's squeeze conv: s moves into their weights. The spatial
    attention at scale 2 − k carried s^(k+1): it moves into decoder skip k."""
    s = model.feature_scale
    for block in model.fusion.blocks:
        scale_input_channels(block.conv, s)
        scale_input_channels(block.attention.squeeze[0], s)
    _scale_decoder_skips(model, [s**3, s**2, s])
    model.feature_scale = 1.0


def _scale_decoder_skips(model: nn.Module, factors: list[float]) -> None:
    """Multiply the skip-channel weights of decoder merge k by the factor of scale 2 − k."""
    for k, merge in enumerate(model.decoder.merges[:3]):
        conv = merge[0]
        scale_input_channels(conv, factors[2 - k], slice(conv.in_channels - model.scale_channels[2 - k], None))


@torch.no_grad()
def _rescale_trunk(model: nn.Module, c: float) -> None:
    """Divide every trunk activation by ``c`` (first conv's weights and all biases), the bank too, and multiply
    the weights of everything that reads the trunk by ``c``. Exact for a ReLU trunk only (``homogeneous``)."""
    if c == 1.0:
        return
    if not model.trunk.homogeneous:
        raise ValueError(f"the {model.trunk.name} trunk does not scale exactly (its activations clip)")
    convs = [m for m in model.trunk.modules() if isinstance(m, nn.Conv2d)]
    convs[0].weight /= c
    for conv in convs:
        if conv.bias is not None:
            conv.bias /= c
    for bank in model.memory.features():
        bank /= c
    for block in model.fusion.blocks:
        scale_input_channels(block.conv, c)
        scale_input_channels(block.attention.squeeze[0], c)
    scale_input_channels(model.decoder.ups[0][0], c)
    merge = model.decoder.merges[3][0]
    scale_input_channels(merge, c, slice(merge.in_channels - model.trunk.levels[0].channels, None))
    _scale_decoder_skips(model, [c**3, c**2, c])


@torch.no_grad()
def _peaks(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Largest magnitudes of the trunk, fusion convs and attention products, leave-one-out on ``images``."""
    peaks: dict[str, float] = {}

    def keep(name: str, value: torch.Tensor) -> None:
        peaks[name] = max(peaks.get(name, 0.0), float(value.abs().max()))

    def keep_attention(_m, _i, out: list[torch.Tensor]) -> None:
        for i, a in enumerate(out):
            keep(f"attention{i}", a)

    handles = [m.register_forward_hook(lambda _m, _i, out: keep("trunk", out)) for m in model.trunk.modules()]
    handles += [
        block.conv.register_forward_hook(lambda _m, _i, out, i=i: keep(f"fusion{i}", out))
        for i, block in enumerate(model.fusion.blocks)
    ]
    handles.append(model.spatial_attention.register_forward_hook(keep_attention))
    bank = [b.clone() for b in model.memory.features()]
    try:
        for i in range(len(images)):
            if len(images) > 1:
                model.memory.store([torch.cat([b[:i], b[i + 1 :]]) for b in bank])
            model(images[i : i + 1])
    finally:
        model.memory.store(bank)
        for handle in handles:
            handle.remove()
    return peaks


@torch.no_grad()
def _scale_output(conv: nn.Conv2d, factor: float) -> None:
    conv.weight *= factor
    if conv.bias is not None:
        conv.bias *= factor
