"""Image classification, the whole task in one file: "image" float inputs, "label" targets, cross-entropy (smoothed
if asked), accuracy; significance's input statistic is each image's pixel standard deviation (the seed's
"intensity"); training batches are augmented by a random crop (4 pixels of zero padding) and a horizontal flip
(`data.augment`), by default on colour images only; the data is an image folder, CIFAR-10 or an archive
(`data.loaders.load_images`); the built-in networks are `models.MODELS`; the logged model takes raw images and
normalises them itself (`RawImageClassifier`).

The logged model carries the training normalisation: training feeds the network images scaled to [0, 1] and
normalised with the training set's per-channel mean and std (`Data.mean`, `Data.std`). `RawImageClassifier` carries
those numbers and applies them itself, so the logged model takes what a user has: uint8 images [B, C, H, W] in
0..255 (as `torchvision.io.read_image` and `PIL` give them), or float32 images in [0, 1] (as
`torchvision.transforms.ToTensor` gives them). Both work in the one graph MLflow's "pt2" format (torch.export)
traces, where a branch on `x.dtype` would be fixed at the example's dtype: the input's kind is read at run time from
unsigned wrap-around instead (in uint8 `0 - 1` is 255, in a float it is -1), and only uint8 is divided by 255. The
arithmetic is the training batches' (`x.float() / 255`, then `(x - mean) / std`), so the model's predictions are
the run's own.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from functional_ast.core.checks import ConfigError
from functional_ast.core.losses import smoothed_cross_entropy
from functional_ast.core.task import Export, Task, classification
from functional_ast.data.images import augment
from functional_ast.data.loaders import load_images
from functional_ast.models import MODELS, airbench94, build_model
from functional_ast.tasks.models import user_builder

# The command line's options only this task takes (argparse dests), beside the common ones.
FLAGS = ("image_size", "label_noise", "label_smoothing", "memory_format", "classes", "imbalance", "duplicates",
         "data_in_memory", "download")
AUGMENTATION = "random crop (4 px of zero padding) and horizontal flip"
DATA_HELP = "an ImageFolder tree (train/<class>/*, test/<class>/*), a CIFAR-10 directory or a .tar.gz of one"
# The savings command's defaults (the benchmark the README's tables come from): SGD at batch 128, one all-data epoch
# at each end, budgets of 6 and 16 full-data epochs; --quick is a class-balanced 6,000 / 2,000 subset and 2 seeds.
RECIPE = {"savings": dict(strategies="full,random,stale,infobatch", budget_epochs="6,16", eval_points=12,
                          batch_size=128, warmup_epochs=1, cooldown_epochs=1, seeds=[0, 1, 2]),
          "quick": dict(limit_train=6000, limit_test=2000, seeds=[0, 1]), "full": {}}
WHITENING_SAMPLES = 5000  # the training images airbench94's whitening is computed from (airbench's number)


def image_classification(label_smoothing: float = 0.0) -> Task:
    """The image classification task the trainer uses by default; with `label_smoothing`, its per-sample loss
    (what training averages, rules rank and evaluation reports) is cross-entropy against smoothed labels."""
    return classification("image classification", input_key="image", target_key="label",
                          loss=smoothed_cross_entropy(label_smoothing))._replace(
        transform=augment, export=export, load=load_images, build_model=image_model_builder, flags=FLAGS,
        augment=colour, describe_augment=AUGMENTATION, default_model="cnn", data_help=DATA_HELP, recipe=RECIPE)


def colour(data) -> bool:
    """Whether crop and flip are on by default: on colour images (measured to help on CIFAR-10, README), off on
    grayscale ones (measured to hurt on Fashion-MNIST: 84.80% with it, 87.65% without, 10k images, 2 epochs)."""
    return int(data.sample_shape[0]) == 3


def image_model_builder(spec: str, data, **options) -> Callable[[], nn.Module]:
    """A function building the model `spec` names (a built-in, or package.module:function called with
    num_classes, in_channels and, if it takes it, image_size) for `data`'s classes, channels and image size."""
    if spec == "gpt":
        raise ConfigError("--model gpt is a language model; use it with --task lm (and a text --data)")
    if spec not in MODELS and ":" not in spec:
        raise ConfigError(f"--model {spec} is not an image model; use one of {', '.join(sorted(MODELS))} or "
                          "package.module:function")
    if data is None:  # the spec checked alone
        return None
    _, channels, height, _ = data.train.data["image"].shape
    num_classes = len(data.train.classes)
    if spec == "airbench94":  # its first layer whitens the patches of the images training sees
        if min(data.train.data["image"].shape[-2:]) < 16:
            raise ConfigError(f"--model airbench94 needs images of at least 16 pixels, these are {height}; pass "
                              "--image-size 32, or use cnn")
        images = data.train.data["image"]  # a folder's are in class order: take them evenly through the set
        spread = torch.linspace(0, len(images) - 1, min(len(images), WHITENING_SAMPLES)).round().long()
        sample = images[spread.to(images.device)].cpu().float().div(255)
        whitening = (sample - data.mean.cpu().view(1, -1, 1, 1)) / data.std.cpu().view(1, -1, 1, 1)
        return lambda: airbench94(num_classes, channels, height, whitening_images=whitening)
    if ":" not in spec:
        return lambda: build_model(spec, num_classes=num_classes, in_channels=channels, image_size=height)
    return user_builder(spec, dict(num_classes=num_classes, in_channels=channels), "num_classes and in_channels",
                        optional={"image_size": height})


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


def what_it_is(classes: Sequence[str], mean: Sequence[float], std: Sequence[float], image_shape: Sequence[int]) -> str:
    """What the logged classifier takes and gives, in a few sentences (its MLflow description's body)."""
    c, h, w = (list(image_shape) + [0, 0, 0])[:3]
    numbers = lambda values: "(" + ", ".join(f"{float(v):.4f}" for v in values) + ")"  # noqa: E731
    shown = [str(k) for k in classes]
    names = ", ".join(shown[:20]) + (f", ... ({len(shown)} in all)" if len(shown) > 20 else "")
    return (f"an image classifier. Input: uint8 images [B, {c}, {h}, {w}] with values 0-255, or float32 in [0, 1]. "
            f"It applies the training normalisation itself: (x/255 - mean) / std per channel, mean {numbers(mean)}, "
            f"std {numbers(std)}. Output: float32 logits [B, {len(shown)}], one per class in this order: {names}; "
            "argmax is the predicted class.")


def description(classes: Sequence[str], mean: Sequence[float], std: Sequence[float], image_shape: Sequence[int],
                strategy: str, run_name: str, test_accuracy: float | None) -> str:
    """The model's short description (MLflow's "Description" of the logged model): where it came from, what goes
    in, what comes out, what it reached."""
    accuracy = f" Test accuracy {test_accuracy:.4f} (final/test_accuracy)." if test_accuracy is not None else ""
    return f"{strategy} run {run_name}: {what_it_is(classes, mean, std, image_shape)}{accuracy}"


def export(network: nn.Module, data) -> Export:
    """The logged classifier: `RawImageClassifier` around the trained network, two raw training images as its
    example, its description and metadata (classes, normalisation)."""
    mean, std = data.mean.cpu(), data.std.cpu()
    classes = list(data.train.classes)
    images = data.train.data["image"][:2].cpu()
    words = what_it_is(classes, mean.tolist(), std.tolist(), tuple(data.sample_shape))
    return Export(RawImageClassifier(network, mean, std).eval(), images, words,
                  dict(input="uint8 [B, C, H, W] 0-255, or float32 in [0, 1]", classes=classes, mean=mean.tolist(),
                       std=std.tolist()))
