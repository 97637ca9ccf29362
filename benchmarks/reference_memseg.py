"""MemSeg run the way the authors' released inference code runs it, on our weights, as the baseline.

Per frame: PIL preprocessing (resize, to tensor, ImageNet normalisation), the encoder, then for each scale a
Python loop over the memory samples to find the nearest, the fusion and decoder, softmax, the map copied to the
host and the top 100 pixels found by a full sort in numpy.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from export.data.batches import IMAGENET_MEAN, IMAGENET_STD
from export.models.memseg.network import MemSeg
from export.nn.memory import smooth


class ReferenceMemSeg:
    """``__call__(frame uint8) -> (score, map)`` the authors' way."""

    def __init__(self, model: MemSeg, device: torch.device) -> None:
        self.model, self.device = model.eval().to(device), device
        self.size = model.config.image_size
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def preprocess(self, frame: np.ndarray) -> torch.Tensor:
        image = Image.fromarray(frame).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        tensor = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)
        return ((tensor - self.mean) / self.std).unsqueeze(0).to(self.device)

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> tuple[float, np.ndarray]:
        model = self.model
        x = self.preprocess(frame)
        stem, shallow = model.trunk.shallow(x)
        deepest = model.trunk.layer4(shallow[-1])
        features = smooth(shallow)
        differences = []
        for f, bank in zip(features, model.memory.features(), strict=True):
            best, best_sum = 0, None
            for n in range(bank.shape[0]):  # the released code's loop over memory samples
                total = float((bank[n : n + 1] - f).abs().sum())
                if best_sum is None or total < best_sum:
                    best, best_sum = n, total
            differences.append((bank[best : best + 1] - f).abs() * model.config.feature_scale)
        concatenated = [
            torch.cat([f * model.config.feature_scale, d], dim=1) for f, d in zip(features, differences, strict=True)
        ]
        fused = model.fusion(concatenated, model.spatial_attention(differences))
        logits = model.decoder(deepest, [fused[2], fused[1], fused[0], stem])
        amap = torch.softmax(logits, dim=1)[0, 1].cpu().numpy()
        return float(np.sort(amap.ravel())[-model.config.top_k :].mean()), amap
