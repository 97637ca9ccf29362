"""Registered models, one package each. Importing this package registers the built-in ones."""

from export.models import (
    cma_ae,  # noqa: F401  (registers itself)
    ensemble,  # noqa: F401  (registers itself)
    memseg,  # noqa: F401  (registers itself)
    patchcore,  # noqa: F401  (registers itself)
    rb_ae,  # noqa: F401  (registers itself)
    trustmae,  # noqa: F401  (registers itself)
)
from export.models.registry import ModelSpec, TrainRun, get_spec, model_names, register

__all__ = ["ModelSpec", "TrainRun", "get_spec", "model_names", "register"]
