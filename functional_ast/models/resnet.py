"""`resnet`: a BatchNorm residual network for small images (ResNet-20 by default)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _BasicBlock(nn.Module):
    """Post-activation basic block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    The shortcut is the identity when shape is unchanged, else a strided 1x1
    conv followed by BatchNorm.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _ResNet(nn.Module):
    """Stem conv-BN-ReLU, three stages of basic blocks, global average pool, linear head."""

    def __init__(self, num_classes: int, in_channels: int, width: int, blocks_per_stage: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        c_in = width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks_per_stage):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(_BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(x.mean(dim=(-2, -1)))


def resnet(
    num_classes: int = 10, in_channels: int = 3, width: int = 16, blocks_per_stage: int = 3
) -> nn.Module:
    """CIFAR-style BatchNorm ResNet: stronger but about 3x slower than :func:`cnn`.

    A 3x3 conv-BN-ReLU stem with ``width`` channels, then three stages of
    ``blocks_per_stage`` basic residual blocks with ``width, 2*width, 4*width``
    channels (stages 2 and 3 downsample by 2), global average pooling and a
    linear head giving ``[B, num_classes]``.  The defaults are ResNet-20 of He
    et al. (2016) (``6 * blocks_per_stage + 2`` weighted layers).

    Accepts any ``[B, in_channels, H, W]`` with ``H, W >= 8``.  No dropout and
    no in-place ops; in eval mode samples are independent.
    """
    return _ResNet(num_classes, in_channels, width, blocks_per_stage)
