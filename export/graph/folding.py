"""Graph surgery for deployment: BatchNorm folded into convolutions, constant scales moved into weights.

Both keep the function the same in exact arithmetic and bring every intermediate tensor of a trained model into
FP16's range (max 65504): a BatchNorm after a convolution that sees ×100-scaled inputs divides by a huge σ, so
its folded weights are moderate, and a constant factor in front of a linear layer is absorbed by its weights.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every BatchNorm2d into the Conv2d registered right before it (in place); returns the count.

    Registration order is forward order in the models of this package (``nn.Sequential``, ResNet's BasicBlock:
    conv1, bn1, relu, conv2, bn2); the equality of outputs before and after is tested.
    """
    folded = 0
    for child in module.children():
        folded += fold_batchnorm(child)
    names = list(module._modules)
    for previous, name in zip(names, names[1:], strict=False):
        conv, bn = module._modules[previous], module._modules[name]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            module._modules[previous] = fuse_conv_bn_eval(conv.eval(), bn.eval())
            module._modules[name] = nn.Identity()
            folded += 1
    return folded


@torch.no_grad()
def scale_input_channels(conv: nn.Conv2d, factor: float, channels: slice = slice(None)) -> None:
    """Make ``conv(x)`` equal the old ``conv(x')`` where ``x'`` is ``x`` with ``channels`` times ``factor``."""
    conv.weight[:, channels] *= factor
