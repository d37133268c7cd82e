"""`cnn`: a small, fast, airbench-flavoured convolutional network, the default for CPU training."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_act(c_in: int, c_out: int) -> list[nn.Module]:
    """3x3 same-padding convolution (no bias), BatchNorm, GELU."""
    return [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.GELU(),
    ]


class _GlobalMaxPool(nn.Module):
    """``[B, C, H, W] -> [B, C]`` by taking the maximum over the spatial dims."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(-2, -1))


def cnn(num_classes: int = 10, in_channels: int = 3, width: int = 32) -> nn.Module:
    """Small fast CNN: the default model for CPU training.

    Layout (airbench-flavoured): three stages with ``width, 2*width, 4*width``
    channels, each ``conv -> 2x2 max-pool -> BN -> GELU -> conv -> BN -> GELU``
    (3x3 bias-free convs), then global max pooling and a linear head giving
    ``[B, num_classes]``.  There is no separate full-resolution stem: on CPU a
    conv at full resolution costs as much as the rest of the network.

    Accepts any ``[B, in_channels, H, W]`` with ``H, W >= 8``.  No dropout and
    no in-place ops; in eval mode samples are independent.
    """
    layers: list[nn.Module] = []
    c_in = in_channels
    for c_out in (width, 2 * width, 4 * width):
        layers += [
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
            *_conv_bn_act(c_out, c_out),
        ]
        c_in = c_out
    layers += [_GlobalMaxPool(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)
