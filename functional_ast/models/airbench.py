"""`airbench94`: the network of Keller Jordan's airbench94 (94% on CIFAR-10 in about 3.5 A100-seconds with its
own recipe), to measure this framework's full-data path against that anchor on the same card.

Here are the network and its initialisation, written from the published description: a 2x2 whitening convolution
whose filters are fixed (set from training patches by `whitening_filters`) and whose bias trains; three conv
groups of widths 64, 256, 256 with identity-initialised convolutions; BatchNorm whose scale stays 1; a global
max-pool (airbench's 3x3 at 32 pixels), a bias-free linear head and logits scaled by 1/9. airbench's training
recipe is not here: runs use this framework's optimiser, schedule and augmentation (docs/design.md says what
differs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (64, 256, 256)  # the three conv groups' channels
LOGIT_SCALE = 1 / 9  # airbench scales its logits down; with its learning rates this trains faster
BN_MOMENTUM = 0.4  # fast running statistics: each batch moves them 40% of the way (airbench's 0.6 kept)
WHITENING_EPS = 5e-4  # added to the patch covariance's eigenvalues before their inverse square root


class _ScalelessBatchNorm(nn.BatchNorm2d):
    """BatchNorm with its scale fixed at 1 (a buffer, so no optimiser moves it); only the shift trains."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, momentum=BN_MOMENTUM, eps=1e-12)
        scale = self.weight.detach().clone()
        del self.weight
        self.register_buffer("weight", scale)


class _Whitening(nn.Module):
    """A 2x2 convolution without padding: fixed filters (a buffer), a trained bias."""

    def __init__(self, filters: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", filters)
        self.bias = nn.Parameter(torch.zeros(len(filters)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)


class _Scale(nn.Module):
    """Multiplies by a constant."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    """A bias-free 3x3 same-padding convolution whose first `c_in` filters start as the identity."""
    conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:c_in])
    return conv


def _group(c_in: int, c_out: int) -> nn.Sequential:
    """conv -> 2x2 max-pool -> BatchNorm -> GELU -> conv -> BatchNorm -> GELU."""
    return nn.Sequential(_conv(c_in, c_out), nn.MaxPool2d(2), _ScalelessBatchNorm(c_out), nn.GELU(),
                         _conv(c_out, c_out), _ScalelessBatchNorm(c_out), nn.GELU())


def whitening_filters(images: torch.Tensor, eps: float = WHITENING_EPS) -> torch.Tensor:
    """The 2x2 filters that whiten the patches of `images` ([N, C, H, W], normalised as training sees them):
    each eigenvector of the patch covariance over the square root of its eigenvalue, then each negated:
    [8C, C, 2, 2]."""
    c = images.shape[1]
    patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # [N, C, H-1, W-1, 2, 2]
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 4 * c)
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(patches.T.double()))
    filters = (eigenvectors.T / (eigenvalues.clamp_min(0) + eps).sqrt()[:, None]).float().reshape(4 * c, c, 2, 2)
    return torch.cat([filters, -filters])


def airbench94(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
               whitening_images: torch.Tensor | None = None) -> nn.Module:
    """airbench94's network: [B, C, H, W] (H, W >= 16) -> logits [B, num_classes]. Its whitening filters come
    from `whitening_images` (normalised training images; airbench takes 5,000), else from a fixed random draw.
    ValueError for images under 16 pixels (three 2x2 pools follow the 2x2 whitening)."""
    if image_size < 16:
        raise ValueError(f"airbench94 needs images of at least 16 pixels, got {image_size}; use cnn for smaller ones")
    if whitening_images is None:
        filters = torch.randn(8 * in_channels, in_channels, 2, 2) / (4 * in_channels) ** 0.5
    elif whitening_images.shape[1] != in_channels:
        raise ValueError(f"whitening images have {whitening_images.shape[1]} channels, the network {in_channels}")
    else:
        filters = whitening_filters(whitening_images)
    groups, c_in = [], len(filters)
    for c_out in WIDTHS:
        groups.append(_group(c_in, c_out))
        c_in = c_out
    return nn.Sequential(_Whitening(filters), nn.GELU(), *groups, nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                         nn.Linear(c_in, num_classes, bias=False), _Scale(LOGIT_SCALE))
