"""The built-in networks, one family a module, used as stateless "shapes" for ``torch.func.functional_call``.

Every image classifier's constructor returns an ``nn.Module`` mapping a float tensor of images
``[B, C, H, W]`` to logits ``[B, num_classes]``.  The modules hold freshly
initialised parameters and buffers; the training code is expected to copy them
out (``dict(model.named_parameters())``, ``dict(model.named_buffers())``) and
call the module only through ``torch.func.functional_call``.

Design constraints shared by all models:

* no in-place operations on activations (no ``inplace=True``), so that
  ``torch.func.vmap(torch.func.grad(...))`` can trace them;
* in eval mode each sample is processed independently (BatchNorm uses its
  running statistics), so per-sample gradients via ``vmap(grad(f))`` over a
  batch equal a loop over single samples;
* ``cnn`` and ``resnet`` end with global pooling, so any image size >= 8 works
  (``airbench94``: >= 16); ``vit`` is built for one fixed ``image_size``.

Caveats for callers using ``torch.func``:

* in train mode BatchNorm updates ``running_mean``/``running_var``/
  ``num_batches_tracked`` in place, so under ``torch.func.grad`` the buffers
  must be an explicit argument of the transformed function (not captured), and
  the caller should pass clones if it wants the old values kept; train-mode
  BatchNorm cannot be used under ``vmap`` (samples are not independent there);
* under ``vmap`` PyTorch has no batching rule for the CPU flash-attention kernel
  behind ``scaled_dot_product_attention`` and warns once that it falls back to
  a per-sample loop; the result is correct and, for these sizes, not slower.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from functional_ast.models.airbench import airbench94
from functional_ast.models.cnn import cnn
from functional_ast.models.gpt import gpt
from functional_ast.models.resnet import resnet
from functional_ast.models.vit import vit

__all__ = ["cnn", "resnet", "vit", "airbench94", "gpt", "MODELS", "build_model"]

MODELS: dict[str, Callable[..., nn.Module]] = {"cnn": cnn, "resnet": resnet, "vit": vit, "airbench94": airbench94}
"""Name -> constructor of every built-in image classifier."""

SIZED = ("vit", "airbench94")  # the constructors that take the image size


def build_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Build model ``name`` (a key of :data:`MODELS`) with its default widths; ``image_size`` goes to the
    models in ``SIZED``. ValueError naming the valid choices if ``name`` is unknown."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(sorted(MODELS))}")
    if name in SIZED:
        return MODELS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)
