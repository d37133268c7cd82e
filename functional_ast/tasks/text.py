"""Language modelling on bytes, the whole task in one file: a batch's "tokens" [B, context + 1] int64 are inputs
tokens[:, :-1] and targets tokens[:, 1:]; a sample's loss is its window's mean next-byte cross-entropy; evaluation
reports bits per byte (the loss / ln 2: one token is one byte), the mean token loss (nats) and next-byte accuracy;
the data is a corpus split by file (`data.loaders.load_text`); the built-in network is `models.gpt`; the logged
model is the network itself (bytes in, next-byte logits out) and each evaluation writes a generated sample."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn

from functional_ast import models
from functional_ast.core.checks import ConfigError
from functional_ast.core.task import Export, Task
from functional_ast.data.loaders import load_text
from functional_ast.tasks import samples
from functional_ast.tasks.models import user_builder

VOCAB = 256


def window_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy of each window: logits [B, T, V], targets [B, T] -> [B]."""
    losses = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), reduction="none")
    return losses.view(targets.shape).mean(-1)


def byte_entropy(x: Tensor) -> Tensor:
    """Shannon entropy (bits) of each window's bytes, [B, T] -> [B]: the text analogue of an image's pixel spread,
    low for boilerplate and repeats, high for varied text."""
    counts = torch.zeros((x.shape[0], VOCAB), device=x.device).scatter_add(1, x, torch.ones(x.shape, device=x.device))
    p = counts / x.shape[1]
    return -(p * torch.log2(p.clamp_min(1e-12))).sum(1)


def token_sums(outputs: Tensor, targets: Tensor, losses: Tensor) -> dict[str, Tensor]:
    """Summed token loss, correct next-byte predictions and token count of one batch."""
    token_loss = F.cross_entropy(outputs.flatten(0, -2).float(), targets.flatten(), reduction="sum")
    return dict(loss_sum=token_loss, correct=(outputs.argmax(-1) == targets).sum(),
                count=torch.tensor(targets.numel(), device=outputs.device))


def bits_per_byte(test: dict[str, float]) -> dict[str, float]:
    """The metrics a mean token loss in nats implies: itself and bits per byte."""
    return {"loss": test["loss"], "bits_per_byte": test["loss"] / math.log(2)}


def token_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Mean token loss, bits per byte and next-byte accuracy from the summed counts."""
    loss = sums["loss_sum"] / sums["count"]
    return {"accuracy": sums["correct"] / sums["count"], **bits_per_byte({"loss": loss})}


def inputs(batch: TensorDict) -> Tensor:
    return batch["tokens"][:, :-1]


def targets(batch: TensorDict) -> Tensor:
    return batch["tokens"][:, 1:]


def language_modelling(name: str = "language modelling") -> Task:
    """Byte-level next-token prediction; the headline metric is bits per byte (lower is better)."""
    return Task(name, inputs, targets, window_loss, byte_entropy, token_sums, token_metrics, transform=None,
                kind="sequences", headline="bits_per_byte", higher_is_better=False, from_record=bits_per_byte,
                columns=("bits_per_byte", "accuracy", "loss"), labels={"accuracy": "next-byte acc"},
                export=export, sample=sample, load=load_text,
                build_model=text_model_builder, flags=FLAGS, augment=lambda data: False, default_model="gpt",
                data_help="a text file, a folder of them (--glob) or a .tar.gz of one", recipe=RECIPE)


# The savings command's defaults: AdamW at batch 32, selection from the first step, budgets of 2 and 4 full-data
# epochs, Rho-1 beside the rules, the standard library's source when no --data is given; --quick is a 2-block gpt on
# at most 0.5 MB of whole files (some 12 s an epoch on the project's 2-core CPU, quiet), the full mode a 4-block one
# on 1 MB (about 45 s).
RECIPE = {"train": dict(optimizer="adam", weight_decay=0.0),
          "savings": dict(strategies="full,random,small_loss,infobatch", budget_epochs="2,4", eval_points=8,
                          batch_size=32, warmup_epochs=0, cooldown_epochs=0, rho1_keep=0.6, rho1_reference=0.1,
                          stdlib=True, seeds=[0, 1, 2]),
          "quick": dict(context=128, depth=2, width=128, heads=4, train_bytes=500_000, test_bytes=50_000),
          "full": dict(context=128, depth=4, width=128, heads=4, train_bytes=1_000_000, test_bytes=100_000)}


# The command line's options only this task takes (argparse dests), beside the common ones.
FLAGS = ("task", "context", "glob", "test_fraction", "gpt", "selective_lm", "stdlib", "junk")


def text_model_builder(spec: str, data=None, *, context: int | None = None,
                       gpt: tuple[int, int, int] = (2, 64, 4), **options) -> Callable[[], nn.Module]:
    """A function building the language model `spec` names: "gpt" (`models.gpt` of depth, width, heads `gpt`), or
    package.module:function called with vocab=256 and context (default: `data`'s)."""
    if spec != "gpt" and ":" not in spec:
        raise ConfigError(f"--model {spec} is an image model; with --task lm use gpt or package.module:function")
    if data is None and context is None:  # the spec checked alone
        return None
    context = context if context is not None else data.train.context
    if spec == "gpt":
        depth, width, heads = gpt
        return lambda: models.gpt(vocab=VOCAB, context=context, depth=depth, width=width, heads=heads)
    return user_builder(spec, dict(vocab=VOCAB, context=context), "vocab and context")


def text_description(context: int, strategy: str, run_name: str, bits_per_byte: float | None) -> str:
    """A byte language model's short description: where it came from, what goes in, what comes out."""
    result = f" Test bits per byte {bits_per_byte:.4f} (final/test_bits_per_byte)." if bits_per_byte is not None else ""
    return f"{strategy} run {run_name}: {what_it_is(context)}{result}"


def what_it_is(context: int) -> str:
    return (f"a byte-level language model. Input: int64 bytes [B, {context}] (0-255; a shorter text right-padded: "
            "the model is causal, so logits at position t read bytes 0..t only). Output: float32 logits "
            f"[B, {context}, 256], the next byte's scores at every position.")


def export(network: nn.Module, data) -> Export:
    """The logged language model: the network itself, two held-out windows as its example."""
    context = data.test.context
    example = data.test.gather(torch.arange(min(2, len(data.test))))[:, :context].contiguous()
    return Export(network, example, what_it_is(context),
                  dict(input=f"int64 bytes [B, {context}] 0-255", vocab=VOCAB, context=context,
                       output=f"float32 logits [B, {context}, 256]"))


def sample(model: nn.Module, params, buffers, data, seed: int, epoch: int) -> str:
    """A seeded continuation of a held-out prompt by `model` holding `params` and `buffers` (`tasks.samples`),
    written with each evaluation."""
    return samples.sample_text(model, params, buffers, data, seed=seed, epoch=epoch)
