"""torch.distributed for language modelling: two gloo processes given the same global batches of byte windows
(a tiny corpus, a tiny gpt) end where one process over them ends, as the image case (test_distributed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_text_data import _corpus_dir

from functional_ast import models, strategies
from functional_ast.core import distributed, optim
from functional_ast.core.step import init_state, make_train_step
from functional_ast.data import text
from functional_ast.edges import checkpoint
from functional_ast.tasks import language_modelling

CASES = {"full": ("full", 0.3), "sundew": ("sundew", 0.3), "random": ("random", 0.3)}
CONTEXT, GLOBAL_BATCH, STEPS = 16, 16, 4


def _data(root):
    root = Path(root)
    src = root / "src" if (root / "src").is_dir() else _corpus_dir(root / "src", files=6, lines=12)  # written once
    corpus = text.load_corpus(src, root=root / "cache")
    train, test = text.split(corpus, CONTEXT, 0.34, 0)
    return text.TextData.of(train, test)


def _run(case: str, root, collective: distributed.Collective):
    name, rate = CASES[case]
    data = _data(root)
    strategy = strategies.build(name, strategies.Context(num_samples=data.num_samples, target_rate=rate,
                                                         pool_size=GLOBAL_BATCH))
    torch.manual_seed(0)
    model = models.gpt(context=CONTEXT, depth=1, width=16, heads=2)
    opt = optim.sgd(0.1, momentum=0.9)  # as the image case: Adam would magnify near-zero gradients' rounding
    state = init_state(model, opt, strategy, key=7)
    step = make_train_step(model, language_modelling(), opt, strategy, collective=collective)
    rates = []
    for s in range(STEPS):  # every rank gets the whole global batch; the step splits the work
        index = (torch.arange(GLOBAL_BATCH) + s * 8) % data.num_samples
        state, metrics = step(state, data.batch(index))
        rates.append(metrics["activation_rate"])
    return state, torch.stack(rates)


def _worker(rank: int, world: int, init_file: str, out_dir: str, root: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        collective = distributed.process_group_collective()
        for case in CASES:
            state, rates = _run(case, root, collective)
            checkpoint.save(f"{out_dir}/{case}/rank{rank}", state, {"rates": rates.tolist()})
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_states(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist-lm")
    _data(tmp)  # the corpus cache exists before the workers read it
    mp.spawn(_worker, args=(2, str(tmp / "init"), str(tmp), str(tmp)), nprocs=2, join=True)
    return tmp


@pytest.mark.parametrize("case", list(CASES))
def test_two_gloo_processes_match_one_process_on_byte_windows(two_process_states, case):
    single, single_rates = _run(case, two_process_states, distributed.LOCAL)
    (s0, m0), (s1, m1) = [checkpoint.load(checkpoint.latest(two_process_states / case / f"rank{r}"))
                          for r in range(2)]
    for key in s0.keys(True, True):  # the ranks agree exactly
        assert torch.equal(s0[key], s1[key]), key
    for key in single.keys(True, True):  # and equal one process, to floating-point tolerance
        if single[key].is_floating_point():
            torch.testing.assert_close(s0[key], single[key], rtol=1e-5, atol=1e-6, msg=str(key))
        else:
            assert torch.equal(s0[key], single[key]), key
    assert m0["rates"] == m1["rates"] == pytest.approx(single_rates.tolist())
    assert int(s0["step"]) == STEPS
