"""Per-layer FP16-vs-FP32 comparison of a deployable graph: where FP16 would overflow or drift.

Runs the same frames through the FP32 and FP16 versions of a graph with a forward hook on every leaf module and
reports, per layer, the largest magnitude seen in FP32 (FP16's largest finite value is 65504), whether the FP16
output is finite, and the relative difference between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

FP16_MAX = 65504.0


@dataclass(frozen=True)
class LayerRange:
    """One layer's output in FP32 and FP16."""

    name: str
    kind: str
    fp32_max: float
    fp16_finite: bool
    relative_error: float

    @property
    def overflows(self) -> bool:
        return self.fp32_max > FP16_MAX or not self.fp16_finite


def _record(module: nn.Module) -> tuple[dict[str, torch.Tensor], list]:
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, child in module.named_modules():
        if next(child.children(), None) is None and name:

            def hook(_m, _i, output, name=name) -> None:
                if isinstance(output, torch.Tensor):
                    outputs[name] = output.detach().float().clone()  # in-place ReLUs follow

            handles.append(child.register_forward_hook(hook))
    return outputs, handles


@torch.no_grad()
def compare_layers(fp32: nn.Module, fp16: nn.Module, frames: torch.Tensor) -> list[LayerRange]:
    """Layer-by-layer ranges and differences of two versions of one graph on ``frames``, in forward order."""
    reference, handles32 = _record(fp32)
    candidate, handles16 = _record(fp16)
    try:
        fp32(frames)
        fp16(frames)
    finally:
        for handle in handles32 + handles16:
            handle.remove()
    kinds = {name: type(m).__name__ for name, m in fp32.named_modules()}
    rows = []
    for name, ref in reference.items():
        out = candidate[name]
        finite = bool(torch.isfinite(out).all())
        scale = float(ref.abs().max())
        error = float((out - ref).abs().max()) / max(scale, 1e-12) if finite else float("inf")
        rows.append(LayerRange(name, kinds[name], scale, finite, error))
    return rows


def format_report(rows: list[LayerRange], limit: int | None = None) -> str:
    """A plain-text table, overflowing layers first, then by relative error."""
    ordered = sorted(rows, key=lambda r: (not r.overflows, -r.relative_error))[:limit]
    lines = [f"{'layer':48} {'kind':16} {'max |fp32|':>12} {'fp16 ok':>8} {'rel err':>10}"]
    for r in ordered:
        ok = "no" if r.overflows else "yes"
        lines.append(f"{r.name:48} {r.kind:16} {r.fp32_max:12.4g} {ok:>8} {r.relative_error:10.3g}")
    return "\n".join(lines)
