"""The contract every registered model implements, whatever it learns and however it is trained.

A model maps a normalised ``B×3×S×S`` image batch to an anomaly map ``B×1×S×S`` (float32): a defect probability
in [0, 1] or an unbounded non-negative distance, as its ``score_kind`` says. The image score comes from the map
through the shared score head (:mod:`export.graph.score_head`). Everything else — trunk, memory, decoder, how it
trains — is the model's own business, inside its package ``export/models/<name>/``.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from export.data.batches import IMAGENET
from export.errors import UserError
from export.graph.folding import fold_batchnorm
from export.graph.score_head import ScoreHead

SCORE_KINDS = ("probability", "distance")


class AnomalyModel(nn.Module):
    """Base class of the registered models: ``anomaly_map`` is the one forward pass, used in training,
    evaluation and the exported graph alike (nothing is written twice)."""

    score_kind: ClassVar[str] = "probability"
    normalisation: ClassVar[tuple[tuple[float, ...], tuple[float, ...]]] = IMAGENET  # mean, std of [0, 1] RGB
    export_precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    config: object  # the model's frozen config dataclass: ``image_size`` and the score head's ``score``/``top_k``

    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``B×3×S×S`` images → ``B×1×S×S`` float32 anomaly map."""
        raise NotImplementedError

    @property
    def score_head(self) -> ScoreHead:
        """The image score the config asks for (mean of the top-k pixels, or the maximum)."""
        return ScoreHead(getattr(self.config, "score", "top_k_mean"), getattr(self.config, "top_k", 1))

    def details(self) -> dict:
        """Model-specific facts the sidecar carries (memory size, …), for people reading it."""
        return {}

    def keep_examples(self, examples: torch.Tensor | None, size: int) -> None:
        """Carry ``examples``, a few good training images (``N×S×S×3`` uint8), in the checkpoint as the
        ``examples`` buffer, for :meth:`example_images`; without them an empty buffer of that shape."""
        examples = examples if examples is not None else torch.zeros(0, size, size, 3)
        self.register_buffer("examples", examples.to(torch.uint8))

    def example_images(self) -> np.ndarray | None:
        """Good images (``N×S×S×3`` RGB uint8) the model carries, used to check reduced precision at export: the
        ``examples`` kept by :meth:`keep_examples`, if any."""
        examples = getattr(self, "examples", None)
        return examples.cpu().numpy() if examples is not None and len(examples) else None

    def prepare_for_export(self, precision: str) -> AnomalyModel:
        """A copy ready to trace at ``precision``: eval mode, BatchNorm folded. Models that export in reduced
        precision override this with whatever keeps their values in range."""
        if precision not in self.export_precisions:
            raise UserError(
                f"{type(self).__name__} exports in {', '.join(self.export_precisions)} only, not {precision}"
            )
        model = copy.deepcopy(self).float().eval()
        fold_batchnorm(model)
        return model

    def export_info(self) -> dict:
        """What ``prepare_for_export`` chose (scales, …), recorded in the sidecar's build section."""
        return {}
