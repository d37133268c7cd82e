"""The trained network as a user can call it: raw images in, class scores out (or, for text, bytes in, next-byte
scores out: `text_description`).

Training feeds the network images scaled to [0, 1] and normalised with the training set's per-channel mean
and std (`Data.mean`, `Data.std`). `RawImageClassifier` carries those numbers and applies them itself, so the
logged model takes what a user has: uint8 images [B, C, H, W] in 0..255 (as `torchvision.io.read_image` and
`PIL` give them), or float32 images in [0, 1] (as `torchvision.transforms.ToTensor` gives them).

Both work in the one graph MLflow's "pt2" format (torch.export) traces, where a branch on `x.dtype` would be
fixed at the example's dtype: the input's kind is read at run time from unsigned wrap-around instead (in uint8
`0 - 1` is 255, in a float it is -1), and only uint8 is divided by 255. The arithmetic is the training batches'
(`x.float() / 255`, then `(x - mean) / std`), so the model's predictions are the run's own.
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
        # 255 for uint8 (0 - 1 wraps around), -1 for a float: the divisor is 255 or 1, at run time, in any trace.
        probe = images[:1, :1, :1, :1] * 0 - 1
        x = images / torch.where(probe > 0, 255.0, 1.0)  # uint8 -> float32 exactly as training's x.float() / 255
        return self.network((x - self.mean) / self.std)


def description(classes: Sequence[str], mean: Sequence[float], std: Sequence[float], image_shape: Sequence[int],
                strategy: str, run_name: str, test_accuracy: float | None) -> str:
    """The model's short description (MLflow's "Description" of the logged model): what goes in, what comes out,
    where it came from."""
    c, h, w = (list(image_shape) + [0, 0, 0])[:3]
    numbers = lambda values: "(" + ", ".join(f"{float(v):.4f}" for v in values) + ")"  # noqa: E731
    shown = [str(k) for k in classes]
    names = ", ".join(shown[:20]) + (f", ... ({len(shown)} in all)" if len(shown) > 20 else "")
    accuracy = f" Test accuracy {test_accuracy:.4f} (final/test_accuracy)." if test_accuracy is not None else ""
    return (f"{strategy} run {run_name}: an image classifier. Input: uint8 images [B, {c}, {h}, {w}] with values "
            f"0-255, or float32 in [0, 1]. It applies the training normalisation itself: (x/255 - mean) / std per "
            f"channel, mean {numbers(mean)}, std {numbers(std)}. Output: float32 logits [B, {len(shown)}], one per "
            f"class in this order: {names}; argmax is the predicted class.{accuracy}")


def text_description(context: int, strategy: str, run_name: str, bits_per_byte: float | None) -> str:
    """A byte language model's short description: what goes in, what comes out, where it came from."""
    result = f" Test bits per byte {bits_per_byte:.4f} (final/test_bits_per_byte)." if bits_per_byte is not None else ""
    return (f"{strategy} run {run_name}: a byte-level language model. Input: int64 bytes [B, {context}] (0-255; a "
            f"shorter text right-padded: the model is causal, so logits at position t read bytes 0..t only). Output: "
            f"float32 logits [B, {context}, 256], the next byte's scores at every position.{result}")
