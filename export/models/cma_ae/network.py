"""CMA-AE (Luo, Niu, Tang, Yu, Li, "Clear Memory-Augmented Auto-Encoder for Surface Defect Detection"): a
patch-wise autoencoder whose codes are read from a sparse memory of normal codes and repaired by gates.

Data flow for a normalised ``B×3×S×S`` input in [−1, 1] (S a multiple of 64):

* **Patches**: cut into ``G×G`` non-overlapping 64×64 patches (G = S/64) by one static Reshape → Transpose →
  Reshape; the map is put back together the inverse way.
* **Encoder** (Table I): Conv 4×4/s2 3→32 (LeakyReLU 0.2, no BN), Conv 3×3/s1 32→32, Conv 4×4/s2 32→64→128→256
  (BN + LeakyReLU 0.2), Conv 4×4/s1/p0 256→512 (no BN, no activation) → ``z ∈ ℝ^512`` per patch.
* **Memory** (Eq. 2–4, :mod:`export.nn.sparse_memory`): ``ẑ`` from ``N`` learned items, softmax of cosines, hard
  shrinkage at 1/N, L1 renormalised.
* **Feature repair** (Eq. 6–10): on ``[z, ẑ]`` three FC layers 1024→512 give the forget gate f, the input gate i
  and the candidate C (tanh). ``repair="text"`` (default): ``z′ = f⊙z + i⊙C``, the paper's text (the forget gate
  erases the encoder's anomalies); ``repair="eq9"``: ``z′ = f⊙ẑ + i⊙C``, its Eq. 9. Gates are sigmoids by default;
  ``gate="softmax"`` is the paper's wording (softmax over the 512 units).
* **Decoder** (Table I): TConv 4×4/s1/p0 512→256, TConv 4×4/s2 256→128→64→32, TConv 3×3 32→32, TConv 4×4/s2
  32→3, tanh (BN + ReLU between).
* **Anomaly map** (MSFR, Eq. 14): encoder layers 1–3 of the input (kept from its one encoder pass) and of the
  reconstruction; ``(F − F′)²`` → channel mean → bilinear upsampling to 64×64, weighted by the layers'
  receptive-field areas 16/276, 64/276, 196/276. A non-negative distance, no pretrained network.

An FP16 export runs the encoder, the repair and the decoder in FP16; the memory read (z normalised for the
cosines) and the squared feature differences of the map stay FP32.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from export.data.batches import SYMMETRIC
from export.errors import DataError, UserError
from export.graph.folding import fold_batchnorm
from export.models.base import AnomalyModel
from export.nn.sparse_memory import SparseMemory

PATCH = 64
CODE = 512
RECEPTIVE_FIELD_WEIGHTS = (16 / 276, 64 / 276, 196 / 276)  # encoder layers 1–3: receptive fields 4², 8², 14²
REPAIRS = ("text", "eq9")
GATES = ("sigmoid", "softmax")


@dataclass(frozen=True)
class CMAAEConfig:
    """What defines a CMA-AE besides its weights; the defaults are the CPU preset (128 px, 2×2 patches)."""

    image_size: int = 128
    memory_size: int = 500
    repair: str = "text"
    gate: str = "sigmoid"
    top_k: int = 100
    score: str = "top_k_mean"

    def __post_init__(self) -> None:
        if self.image_size < PATCH or self.image_size % PATCH:
            raise DataError(f"--image-size {self.image_size}: must be a multiple of {PATCH}")
        if self.memory_size < 2:
            raise DataError(f"--memory-size {self.memory_size}: needs at least 2 items")
        if self.repair not in REPAIRS or self.gate not in GATES:
            raise DataError(f"--repair one of {', '.join(REPAIRS)}, --gate one of {', '.join(GATES)}")

    def to_dict(self) -> dict:
        return asdict(self)


def _down(c_in: int, c_out: int, kernel: int = 4, stride: int = 2, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)
    )


def _up(c_in: int, c_out: int, kernel: int = 4, stride: int = 2, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class Encoder(nn.Module):
    """64×64 patch → layers 1–3 (32², 32², 16²) for MSFR, and the code ``z`` (B×512)."""

    def __init__(self) -> None:
        super().__init__()
        self.shallow_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.LeakyReLU(0.2)), _down(32, 32, 3, 1, 1), _down(32, 64)]
        )
        self.deep = nn.Sequential(_down(64, 128), _down(128, 256), nn.Conv2d(256, CODE, 4, 1, 0))

    def shallow(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of layers 1–3."""
        features = []
        for layer in self.shallow_layers:
            x = layer(x)
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = self.shallow(x)
        return features, self.deep(features[-1]).flatten(1)


class Decoder(nn.Module):
    """Code (B×512) → 64×64 patch in [−1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _up(CODE, 256, 4, 1, 0),
            _up(256, 128),
            _up(128, 64),
            _up(64, 32),
            _up(32, 32, 3, 1, 1),
            nn.ConvTranspose2d(32, 3, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z[:, :, None, None])


class FeatureRepair(nn.Module):
    """LSTM-like gates on ``[z, ẑ]`` (Eq. 6–10): ``z′ = f⊙z + i⊙C`` (text) or ``f⊙ẑ + i⊙C`` (Eq. 9)."""

    def __init__(self, repair: str, gate: str) -> None:
        super().__init__()
        self.repair, self.gate = repair, gate
        self.forget, self.input, self.candidate = (nn.Linear(2 * CODE, CODE) for _ in range(3))

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) if self.gate == "sigmoid" else torch.softmax(x, dim=1)

    def forward(self, z: torch.Tensor, z_memory: torch.Tensor) -> torch.Tensor:
        both = torch.cat([z, z_memory], dim=1)
        kept = z if self.repair == "text" else z_memory
        return self._gate(self.forget(both)) * kept + self._gate(self.input(both)) * torch.tanh(self.candidate(both))


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=(PATCH, PATCH), mode="bilinear", align_corners=False)


def to_patches(x: torch.Tensor, grid: int) -> torch.Tensor:
    """``B×C×(G·64)×(G·64)`` → ``(B·G²)×C×64×64``, patches in row-major order (static Reshape/Transpose)."""
    channels = x.shape[1]
    x = x.reshape(-1, channels, grid, PATCH, grid, PATCH).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, channels, PATCH, PATCH)


def from_patches(x: torch.Tensor, grid: int) -> torch.Tensor:
    """The inverse of :func:`to_patches`."""
    channels = x.shape[1]
    x = x.reshape(-1, grid, grid, channels, PATCH, PATCH).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(-1, channels, grid * PATCH, grid * PATCH)


class CMAAE(AnomalyModel):
    """CMA-AE: ``reconstruct`` is the training pass (on patches), ``anomaly_map`` the MSFR distance map."""

    score_kind = "distance"
    normalisation = SYMMETRIC
    export_precisions = ("fp32", "fp16")

    def __init__(self, config: CMAAEConfig, examples: torch.Tensor | None = None) -> None:
        """``examples``: a few good training images (``N×S×S×3`` uint8) kept to check FP16 exports on."""
        super().__init__()
        self.config = config
        self.keep_examples(examples, config.image_size)
        self.dtype = torch.float32  # of the encoder, repair and decoder; FP16 only in an FP16 export
        self.grid = config.image_size // PATCH
        self.encoder = Encoder()
        self.memory = SparseMemory(config.memory_size, CODE)
        self.repair = FeatureRepair(config.repair, config.gate)
        self.decoder = Decoder()

    def reconstruct(
        self, patches: torch.Tensor, repair: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Patches ``P×3×64×64`` → (reconstruction, the input's layer 1–3 features, memory weights ``ŵ``).
        Without ``repair`` (training stage 1) the decoder reads the memory's ``ẑ`` directly."""
        features, z = self.encoder(patches.to(self.dtype))
        z_memory, weights = self.memory(z.float())
        z_memory = z_memory.to(self.dtype)
        code = self.repair(z, z_memory) if repair else z_memory
        return self.decoder(code), features, weights

    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        reconstruction, features, _ = self.reconstruct(to_patches(x, self.grid))
        again = self.encoder.shallow(reconstruction)
        residual = sum(
            weight * _upsample(((f.float() - g.float()) ** 2).mean(dim=1, keepdim=True))
            for weight, f, g in zip(RECEPTIVE_FIELD_WEIGHTS, features, again, strict=True)
        )
        return from_patches(residual.float(), self.grid)

    def details(self) -> dict:
        c = self.config
        return {"memory_size": c.memory_size, "patch": PATCH, "repair": c.repair, "gate": c.gate}

    def prepare_for_export(self, precision: str) -> CMAAE:
        """A copy for tracing: eval mode, BatchNorm folded into the convolutions (transposed ones too), the
        unit-norm memory folded into a constant, the encoder, repair and decoder at ``precision``."""
        if precision not in self.export_precisions:
            raise UserError(f"CMA-AE exports in {', '.join(self.export_precisions)} only, not {precision}")
        model = copy.deepcopy(self).float().eval()
        fold_batchnorm(model)
        _fold_transposed_batchnorm(model.decoder.layers)
        model.memory.fold()
        model.dtype = torch.float16 if precision == "fp16" else torch.float32
        for part in (model.encoder, model.repair, model.decoder):
            part.to(model.dtype)
        return model


def _fold_transposed_batchnorm(module: nn.Module) -> None:
    """Fold each BatchNorm2d into the ConvTranspose2d registered right before it (in place, eval mode)."""
    for child in module.children():
        _fold_transposed_batchnorm(child)
    names = list(module._modules)
    for previous, name in zip(names, names[1:], strict=False):
        conv, bn = module._modules[previous], module._modules[name]
        if isinstance(conv, nn.ConvTranspose2d) and isinstance(bn, nn.BatchNorm2d):
            module._modules[previous] = fuse_conv_bn_eval(conv.eval(), bn.eval(), transpose=True)
            module._modules[name] = nn.Identity()
