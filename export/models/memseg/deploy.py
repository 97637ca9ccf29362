"""The deployable graph: raw camera frames in, image score and anomaly map out.

Everything model-specific happens inside the graph, so the line runs it without Python per frame:

1. the uint8 frame is cast first (TensorRT lets a UINT8 tensor feed only a Cast), cropped to the ROI, grey
   replicated to three channels or BGR reordered, resized with antialiasing (integer-factor area pooling, then
   bilinear for the remainder) and ImageNet-normalised;
2. MemSeg with BatchNorm folded and its ×100 feature scale moved into the weights that follow it;
3. the memory lookup: the bank is a constant, the per-scale distance sums, ArgMin and Gather are graph ops;
4. softmax and the top-k score.

Precision: ``fp16`` runs the convolutions in FP16 and keeps FP32 islands where FP16 breaks: the preprocessing,
the memory distances and their sums, the spatial-attention products (rescaled by a power of two chosen from the
memory so FP16 sees values near 1, with the inverse moved into the decoder weights), softmax and the score.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from edge.sidecar import FrameSpec
from export.graph.folding import fold_batchnorm, scale_input_channels
from export.nn.memory import smooth
from export.nn.blocks import upsample2x
from export.models.memseg.network import SCALE_CHANNELS, MemSeg
from export.data.batches import IMAGENET_MEAN, IMAGENET_STD, normalise

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


class FramePreprocess(nn.Module):
    """uint8 camera frames (``B×H×W`` or ``B×H×W×3``) → normalised ``B×3×S×S`` float32."""

    def __init__(self, frame: FrameSpec, size: int) -> None:
        super().__init__()
        self.frame, self.size = frame, size
        x, y, w, h = frame.region
        self.pool = (max(1, h // size), max(1, w // size))
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("inv_std", 1.0 / std, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x0, y0, w, h = self.frame.region
        x = frames.to(torch.float32)  # first op on the uint8 input: a Cast
        x = x[:, y0 : y0 + h, x0 : x0 + w]
        if self.frame.channels == 1:
            x = x.unsqueeze(1).expand(-1, 3, -1, -1)
        else:
            x = x.permute(0, 3, 1, 2)
            if self.frame.pixel_format == "bgr8":
                x = torch.cat([x[:, 2:3], x[:, 1:2], x[:, 0:1]], dim=1)
        if self.pool != (1, 1):
            x = F.avg_pool2d(x, kernel_size=self.pool, stride=self.pool)
        if tuple(x.shape[2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) * self.inv_std


def power_of_two_above(value: float, target: float, shrink_only: bool = True) -> float:
    """The smallest power of two ``c`` with ``value / c ≤ target`` (``c ≥ 1`` when ``shrink_only``): dividing by
    it is exact in floating point."""
    exponent = math.ceil(math.log2(max(value, 1e-30) / target))
    return 2.0 ** (max(0, exponent) if shrink_only else exponent)


# Largest magnitude we let FP16 see on normal parts: 2^8, which leaves 256× headroom to 65504 for defects.
RANGE_TARGET = 256.0


class DeployedMemSeg(nn.Module):
    """MemSeg folded for deployment; ``forward(frames) -> (score B float32, anomaly_map B×1×S×S)``.

    Construction folds BatchNorm, absorbs the ×100 feature scale, then measures value ranges on the memory
    images (leave-one-out: each against the others stands in for a good part) and rescales by powers of two so
    every FP16 tensor of a normal part stays below ``RANGE_TARGET``:

    * the trunk (ReLU network with biases: positively homogeneous) is divided by ``trunk_scale``, its consumers'
      weights multiplied by it;
    * each fusion block's attention-weighted conv is divided by ``fusion_scale[i]``, its projection multiplied;
    * the spatial-attention products (FP32) are divided by ``attention_scale[i]`` before the cast, the decoder's
      skip weights multiplied.
    """

    def __init__(self, model: MemSeg, frame: FrameSpec, precision: str = "fp32", map_dtype: str = "fp32") -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        self.dtype = torch.float32  # while measuring ranges; the asked precision at the end
        self.map_dtype = PRECISIONS[map_dtype]
        self.top_k = model.config.top_k
        self.preprocess = FramePreprocess(frame, model.config.image_size)
        model = copy.deepcopy(model).float().eval()
        model.refresh_memory()
        for i, bank in enumerate(model.memory.features()):
            self.register_buffer(f"bank{i}", bank.clone())  # FP32: distances and their sums stay FP32
        fold_batchnorm(model)
        self.trunk, self.fusion, self.decoder = model.trunk, model.fusion, model.decoder
        self.trunk_scale, self.fusion_scale, self.attention_scale = 1.0, [1.0] * 3, [1.0] * 3
        self._probe: dict[str, float] | None = None
        self._absorb_feature_scale(model.config.feature_scale)
        calibration = normalise(model.memory_images.permute(0, 3, 1, 2))
        self._rescale_trunk(power_of_two_above(self._peaks(calibration)["trunk"], RANGE_TARGET))
        peaks = self._peaks(calibration)
        self.fusion_scale = [power_of_two_above(peaks[f"fusion{i}"], RANGE_TARGET) for i in range(3)]
        for block, c in zip(self.fusion.blocks, self.fusion_scale, strict=True):
            _scale_output(block.conv, 1.0 / c)
            scale_input_channels(block.project[0][0], c)
        self.attention_scale = [power_of_two_above(peaks[f"attention{i}"], 1.0, shrink_only=False) for i in range(3)]
        self._scale_decoder_skips(self.attention_scale)
        self.dtype = PRECISIONS[precision]
        for part in (self.trunk, self.fusion, self.decoder):
            part.to(self.dtype)

    def _absorb_feature_scale(self, scale: float) -> None:
        """[II, DI*] × s fed a conv and the attention's squeeze conv: s moves into their weights. The spatial
        attention at scale 2 − k carried s^(k+1): it moves into decoder skip k."""
        for block in self.fusion.blocks:
            scale_input_channels(block.conv, scale)
            scale_input_channels(block.attention.squeeze[0], scale)
        self._scale_decoder_skips([scale**3, scale**2, scale])

    def _scale_decoder_skips(self, factors: list[float]) -> None:
        """Multiply the skip-channel weights of decoder merge k by the factor of scale 2 − k."""
        for k, merge in enumerate(self.decoder.merges[:3]):
            conv = merge[0]
            scale_input_channels(conv, factors[2 - k], slice(conv.in_channels - SCALE_CHANNELS[2 - k], None))

    @torch.no_grad()
    def _rescale_trunk(self, c: float) -> None:
        """Divide every trunk activation by ``c`` (first conv's weights and all biases), the banks too, and
        multiply the weights of everything that reads the trunk by ``c``."""
        if c == 1.0:
            return
        convs = [m for m in self.trunk.modules() if isinstance(m, nn.Conv2d)]
        convs[0].weight /= c
        for conv in convs:
            if conv.bias is not None:
                conv.bias /= c
        for bank in self.banks():
            bank /= c
        for block in self.fusion.blocks:
            scale_input_channels(block.conv, c)
            scale_input_channels(block.attention.squeeze[0], c)
        scale_input_channels(self.decoder.ups[0][0], c)
        merge = self.decoder.merges[3][0]
        scale_input_channels(merge, c, slice(merge.in_channels - SCALE_CHANNELS[0], None))
        self._scale_decoder_skips([c**3, c**2, c])
        self.trunk_scale = c

    @torch.no_grad()
    def _peaks(self, images: torch.Tensor) -> dict[str, float]:
        """Largest magnitudes of the trunk, fusion convs and attention products, leave-one-out on ``images``."""
        peaks: dict[str, float] = {}

        def keep(name: str, value: torch.Tensor) -> None:
            peaks[name] = max(peaks.get(name, 0.0), float(value.abs().max()))

        handles = [m.register_forward_hook(lambda _m, _i, out: keep("trunk", out)) for m in self.trunk.modules()]
        handles += [
            block.conv.register_forward_hook(lambda _m, _i, out, i=i: keep(f"fusion{i}", out))
            for i, block in enumerate(self.fusion.blocks)
        ]
        self._probe = peaks
        try:
            for i in range(len(images)):
                others = [torch.cat([b[:i], b[i + 1 :]]) for b in self.banks()]
                self.infer(images[i : i + 1], others if len(images) > 1 else self.banks())
        finally:
            self._probe = None
            for handle in handles:
                handle.remove()
        return peaks

    def banks(self) -> list[torch.Tensor]:
        return [self.bank0, self.bank1, self.bank2]

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.infer(self.preprocess(frames), self.banks())

    def infer(self, x: torch.Tensor, banks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised ``B×3×S×S`` input → (score, anomaly map)."""
        stem, shallow = self.trunk.shallow(x.to(self.dtype))
        deepest = self.trunk.layer4(shallow[-1])
        features = smooth(shallow)
        differences = []
        for f, bank in zip(features, banks, strict=True):
            f32 = f.float()
            distances = (f32.unsqueeze(1) - bank.unsqueeze(0)).abs().sum(dim=(2, 3, 4))  # B×N, FP32
            differences.append((bank[distances.argmin(dim=1)] - f32).abs())
        attention = [d.mean(dim=1, keepdim=True) for d in differences]
        for i in (1, 0):
            attention[i] = attention[i] * upsample2x(attention[i + 1])
        if self._probe is not None:
            for i, a in enumerate(attention):
                self._probe[f"attention{i}"] = max(self._probe.get(f"attention{i}", 0.0), float(a.max()))
        attention = [(a / c).to(self.dtype) for a, c in zip(attention, self.attention_scale, strict=True)]
        fused = [
            block(torch.cat([f, d.to(self.dtype)], dim=1))
            for block, f, d in zip(self.fusion.blocks, features, differences, strict=True)
        ]
        for i in (1, 0):
            fused[i] = fused[i] + self.fusion.top_down[i](upsample2x(fused[i + 1]))
        skips = [f * a for f, a in zip(fused, attention, strict=True)]
        logits = self.decoder(deepest, [skips[2], skips[1], skips[0], stem])
        probability = torch.softmax(logits.float(), dim=1)[:, 1:2]
        score = probability.flatten(1).topk(self.top_k, dim=1).values.mean(dim=1)
        return score, probability.to(self.map_dtype)


@torch.no_grad()
def _scale_output(conv: nn.Conv2d, factor: float) -> None:
    conv.weight *= factor
    if conv.bias is not None:
        conv.bias *= factor
