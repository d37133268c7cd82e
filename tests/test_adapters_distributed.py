"""The adapters under torch.distributed: two gloo processes with DDP select what one process selects, train disjoint
shares of it, and end with one process's parameters."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import tiny_mlp
from torch.utils.data import DataLoader

from functional_ast.adapters import Sampler, Selector
from functional_ast.core import distributed, sampling
from functional_ast.core.significance import intensity

N, BATCH, RATE, EPOCHS, SEED = 64, 8, 0.25, 3, 3
CASES = {"sampler-sundew_remembered": ("sampler", "sundew_remembered"), "sampler-stale": ("sampler", "stale"),
         "selector-sundew": ("selector", "sundew"), "selector-stale": ("selector", "stale")}


def _rows():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (N,), generator=g)
    images = torch.randn(N, 3, 4, 4, generator=g) + labels.view(-1, 1, 1, 1) * 0.5
    return [{"image": images[i], "label": labels[i], "index": torch.tensor(i)} for i in range(N)]


def _run(case: str, collective: distributed.Collective) -> dict:
    """The user's loop (torch.optim.SGD, DDP when there are ranks) with the case's adapter; returns the final
    parameters, the adapter's state and the global selection of every step (this rank's rows of it)."""
    door, rule = CASES[case]
    torch.manual_seed(0)
    model = tiny_mlp()
    net = torch.nn.parallel.DistributedDataParallel(model) if collective.world > 1 else model
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    rows = _rows()
    picked = []

    def train(loss):
        opt.zero_grad()
        loss.backward()
        opt.step()

    if door == "sampler":
        sampler = Sampler(rule, N, BATCH, RATE, seed=SEED, warmup_epochs=1, collective=collective)
        loader = DataLoader(rows, batch_sampler=sampler)
        for _ in range(EPOCHS):
            for batch in loader:
                x, y, index = batch["image"], batch["label"], batch["index"]
                losses = F.cross_entropy(net(x), y, reduction="none")
                train(sampler.loss(index, losses, intensity(x)))
                picked.append(index.tolist())
        adapter = sampler
    else:  # every rank gets its contiguous shard of the one process's batch (pools after the warm-up epoch)
        selector = Selector(rule, N, RATE, seed=SEED, warmup_epochs=1, collective=collective)
        pool = round(BATCH / RATE)
        for epoch in range(EPOCHS):
            selector.set_epoch(epoch)
            size = BATCH if selector.all_data else pool
            order = sampling.epoch_order(N, SEED, epoch)
            for b in range(N // size):
                lo, hi = distributed.shard_bounds(size, collective.rank, collective.world)
                part = [rows[int(i)] for i in order[b * size:(b + 1) * size][lo:hi]]
                x, y = torch.stack([r["image"] for r in part]), torch.stack([r["label"] for r in part])
                index = torch.stack([r["index"] for r in part])
                losses = F.cross_entropy(net(x), y, reduction="none")
                choice = selector.select(index, losses, intensity(x))
                train(choice.loss)
                picked.append(index[choice.index].tolist())
        adapter = selector
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "adapter": adapter.state_dict(), "picked": picked}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        collective = distributed.process_group_collective()
        torch.save({case: _run(case, collective) for case in CASES}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapters-dist")
    mp.spawn(_worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("case", list(CASES))
def test_two_gloo_processes_select_and_train_as_one_process(ranks, case):
    one = _run(case, distributed.LOCAL)
    r0, r1 = ranks[0][case], ranks[1][case]
    # Each rank trained a disjoint share of every step's selection; together, in rank order, one process's.
    for mine, theirs, whole in zip(r0["picked"], r1["picked"], one["picked"], strict=True):
        assert not set(mine) & set(theirs) and mine + theirs == whole
    # The rule's state (tables, gate, controller: so the global rate), counters and key agree on both ranks ...
    state0, state1, single = r0["adapter"]["state"], r1["adapter"]["state"], one["adapter"]["state"]
    for key in ("work", "rng", "step", "epoch", "batch"):
        assert _flat(state0[key]) == _flat(state1[key]) == _flat(single[key]), key
    for name, value in _leaves(state0["selector"]):
        torch.testing.assert_close(value, dict(_leaves(state1["selector"]))[name], rtol=0, atol=0)
        torch.testing.assert_close(value, dict(_leaves(single["selector"]))[name], rtol=1e-5, atol=1e-6)
    # ... and DDP's average of the ranks' scaled losses' gradients is one process's gradient: the same parameters.
    for name, value in one["params"].items():
        torch.testing.assert_close(r0["params"][name], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r1["params"][name], r0["params"][name], rtol=0, atol=0)


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _flat(tree):
    return {k: v.tolist() for k, v in _leaves(tree)} if isinstance(tree, dict) else tree.tolist()
