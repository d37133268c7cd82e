"""The trained network as a user can call it: raw images in, class scores out.

Training feeds the network images scaled to [0, 1] and normalised with the training set's per-channel mean
and std (`Data.mean`, `Data.std`). `RawImageClassifier` carries those numbers and applies them itself, so the
logged model takes what a user has: uint8 images [B, C, H, W] in 0..255 (as `torchvision.io.read_image` and
`PIL` give them), or, in Python, float images in [0, 1] (as `torchvision.transforms.ToTensor` gives them).

Logged as MLflow's "pt2" (torch.export) the graph is traced on uint8 input, which fixes its input dtype: the
loaded model then takes uint8 only (a float batch is refused with "Tensor dtype mismatch"), and
`x.mul(255).round().to(torch.uint8)` converts [0, 1] floats. The pickled module (the fallback for networks
that do not export) takes both.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class RawImageClassifier(nn.Module):
    """`network` behind the training normalisation: uint8 [B, C, H, W] (0..255) or float in [0, 1] in, the
    network's outputs (class logits) out. `mean` and `std` are per channel, in [0, 1] units."""

    def __init__(self, network: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.network = network
        mean = torch.as_tensor(mean, dtype=torch.float32).detach().reshape(1, -1, 1, 1)
        std = torch.as_tensor(std, dtype=torch.float32).detach().reshape(1, -1, 1, 1)
        if mean.shape != std.shape:
            raise ValueError(f"mean {tuple(mean.shape[1:2])} and std {tuple(std.shape[1:2])} differ in channels")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        if images.dtype == torch.uint8:  # static under torch.export: the traced graph keeps one branch
            x = x / 255.0
        return self.network((x - self.mean) / self.std)


def description(classes: Sequence[str], mean: Sequence[float], std: Sequence[float], image_shape: Sequence[int],
                strategy: str, run_name: str, test_accuracy: float | None, exported: bool) -> str:
    """The model's short description (MLflow's "Description" of the logged model): what goes in, what comes out,
    where it came from."""
    c, h, w = (list(image_shape) + [0, 0, 0])[:3]
    numbers = lambda values: "(" + ", ".join(f"{float(v):.4f}" for v in values) + ")"  # noqa: E731
    takes = ("uint8 images [B, %d, %d, %d], values 0-255 (for floats in [0, 1]: x.mul(255).round().to(torch.uint8))"
             % (c, h, w) if exported else
             "uint8 images [B, %d, %d, %d] with values 0-255, or float32 in [0, 1]" % (c, h, w))
    shown = [str(k) for k in classes]
    names = ", ".join(shown[:20]) + (f", ... ({len(shown)} in all)" if len(shown) > 20 else "")
    accuracy = f" Test accuracy {test_accuracy:.4f} (final/test_accuracy)." if test_accuracy is not None else ""
    return (f"{strategy} run {run_name}: an image classifier. Input: {takes}. It applies the training "
            f"normalisation itself: (x/255 - mean) / std per channel, mean {numbers(mean)}, std {numbers(std)}. "
            f"Output: float32 logits [B, {len(shown)}], one per class in this order: {names}; "
            f"argmax is the predicted class.{accuracy}")
