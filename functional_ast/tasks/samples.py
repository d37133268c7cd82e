"""What a language model writes: a seeded continuation of a prompt taken from the held-out text.

`generate` feeds the model exactly `context` bytes at a time, the prompt right-padded with zeros while it is
shorter: a causal model's logits at position t read only bytes 0..t, so the padding changes nothing, and a model
exported for one input length (the logged model) generates the same. Sampling uses its own generator: it never
touches the global random state (a resumed run stays bit-exact).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.func import functional_call

PROMPT_BYTES = 64
LENGTH = 200
TEMPERATURE = 0.8


def prompt_of(data, size: int = PROMPT_BYTES) -> Tensor:
    """The first `size` bytes (at most the context) of the held-out text's first window, int64 [size]."""
    return data.test.gather(torch.tensor([0]))[0, :min(size, data.test.context)]


@torch.no_grad()
def generate(forward: Callable[[Tensor], Tensor], prompt: Tensor, context: int, length: int = LENGTH,
             temperature: float = TEMPERATURE, seed: int = 0) -> Tensor:
    """`length` bytes following `prompt` (int64 [n]) from `forward` ([1, context] int64 -> [1, context, 256]
    logits): sampled at `temperature` with a generator seeded `seed`, greedy at temperature 0."""
    generator = torch.Generator().manual_seed(seed)
    tokens = prompt.detach().to("cpu", torch.int64).flatten().tolist()
    start = len(tokens)
    for _ in range(length):
        window = tokens[-context:]
        x = torch.zeros(1, context, dtype=torch.int64)
        x[0, :len(window)] = torch.tensor(window)
        logits = forward(x)[0, len(window) - 1].float().cpu()
        if temperature <= 0:
            tokens.append(int(logits.argmax()))
        else:
            tokens.append(int(torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator)))
    return torch.tensor(tokens[start:], dtype=torch.int64)


def decoded(tokens: Tensor) -> str:
    """Bytes as text (UTF-8, undecodable bytes replaced)."""
    return bytes(tokens.to(torch.uint8).tolist()).decode("utf-8", errors="replace")


def sample_text(model, params, buffers, data, *, seed: int = 0, epoch: int | None = None) -> str:
    """A readable sample of the model holding `params` and `buffers` on `data`'s held-out prompt."""
    device = next(iter(params.values())).device
    prompt, context = prompt_of(data), data.test.context

    def forward(x: Tensor) -> Tensor:
        return functional_call(model, (dict(params.items()), dict(buffers.items())), (x.to(device),))

    out = generate(forward, prompt, context, seed=seed)
    heading = f"epoch {epoch}: " if epoch is not None else ""
    return (f"{heading}{LENGTH} bytes sampled at temperature {TEMPERATURE:g} (seed {seed}) after a prompt of "
            f"{len(prompt)} bytes of held-out text\n\n--- prompt ---\n{decoded(prompt)}\n--- generated ---\n"
            f"{decoded(out)}\n")
