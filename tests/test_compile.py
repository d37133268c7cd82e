"""torch.compile and the step: compiled and eager steps agree for every strategy, the compiled step
does not recompile as the number of selected samples varies, and a step keeps everything in tensors
(no Python numbers in state or metrics, no `.item()` inside the step)."""

from __future__ import annotations

import collections

import pytest
import torch
from conftest import make_batch, tiny_bn_model, tiny_mlp
from tensordict import TensorDict
from torch.utils._python_dispatch import TorchDispatchMode

import functional_ast as fa
from functional_ast import strategies


def _compile_available() -> bool:
    try:
        import torch._inductor  # noqa: F401
    except ImportError:
        return False
    return torch._dynamo.is_dynamo_supported()


needs_compile = pytest.mark.skipif(not _compile_available(), reason="torch.compile is not available here")

NUM_SAMPLES, BATCH, RATE = 64, 32, 0.25


def _strategy(name: str):
    if name == "proxy":
        return strategies.proxy(tiny_mlp(), RATE)  # the proxy's scoring network
    return strategies.build(name, strategies.Context(num_samples=NUM_SAMPLES, target_rate=RATE, pool_size=BATCH))


def _batch(name: str, i: int) -> TensorDict:
    """Batch i for a strategy: epoch-order batches of 32 (indices 0-31, then 32-63, ...), or for
    `prioritized` the k = 8 samples a sampler would draw, with importance weights."""
    if name == "prioritized":
        g = torch.Generator().manual_seed(100 + i)
        index = torch.randint(0, NUM_SAMPLES, (round(RATE * BATCH),), generator=g)
        batch = make_batch(NUM_SAMPLES, seed=99)[index]
        batch["weight"] = 0.5 + torch.rand(index.shape[0], generator=g)
        return batch
    batch = make_batch(BATCH, seed=i)
    batch["index"] = batch["index"] + BATCH * (i % 2)
    return batch


def _setup(name: str, model_fn=tiny_mlp, compile: bool = False, optimizer=None):
    model, strategy = model_fn(), _strategy(name)
    tx = optimizer or fa.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    state = fa.init_state(model, tx, strategy, key=0)
    return state, fa.make_train_step(model, fa.cross_entropy, tx, strategy, compile=compile)


def _assert_trees_close(actual: TensorDict, expected: TensorDict) -> None:
    assert set(actual.keys(True, True)) == set(expected.keys(True, True))
    for key in expected.keys(True, True):
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")


@needs_compile
@pytest.mark.parametrize("name", strategies.names())
def test_compiled_and_eager_steps_agree(name):
    torch._dynamo.reset()
    # BatchNorm (buffers through the compiled update) on the strategy that trains everything.
    model_fn = tiny_bn_model if name == "full" else tiny_mlp
    eager_state, eager = _setup(name, model_fn)
    compiled_state, compiled = _setup(name, model_fn, compile=True)
    for i in range(3):
        batch = _batch(name, i)
        eager_state, eager_metrics = eager(eager_state, batch)
        compiled_state, compiled_metrics = compiled(compiled_state, batch)
        assert int(compiled_metrics["n_trained"]) == int(eager_metrics["n_trained"]) > 0
        _assert_trees_close(compiled_metrics, eager_metrics)
    _assert_trees_close(compiled_state, eager_state)
    assert int(compiled_state["step"]) == 3


@needs_compile
def test_compiled_step_does_not_recompile_as_the_selected_count_varies():
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    state, step = _setup("sundew", compile=True)
    trained = []
    for i in range(2):  # warm-up: the scoring pass and the update compile once each
        state, metrics = step(state, _batch("sundew", i))
        trained.append(int(metrics["n_trained"]))
    graphs = counters["stats"]["unique_graphs"]
    assert 1 <= graphs <= 2
    for i in range(2, 8):
        state, metrics = step(state, _batch("sundew", i))
        trained.append(int(metrics["n_trained"]))
    assert len(set(trained)) >= 3, trained  # the sub-batch size really varied
    assert counters["stats"]["unique_graphs"] == graphs
    assert sum(counters["recompiles"].values()) == 0, dict(counters["recompiles"])
    assert not counters["graph_break"], dict(counters["graph_break"])


def _leaves(tree: TensorDict) -> list:
    return [tree.get(key) for key in tree.keys(True, True)]


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=needs_compile)], ids=["eager", "compiled"])
def test_state_and_metrics_are_tensors_only(compile):
    if compile:
        torch._dynamo.reset()
    state, step = _setup("sundew", compile=compile)
    for i in range(2):
        state, metrics = step(state, _batch("sundew", i))
    assert all(isinstance(v, torch.Tensor) for v in _leaves(state))
    assert metrics.keys() and all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in _leaves(metrics))
    assert {"loss", "n_trained", "activation_rate", "skipped_nonfinite", "saved_pct"} <= set(metrics.keys())


class _HostReads(TorchDispatchMode):
    """Counts `aten._local_scalar_dense`: what `.item()`, `float(t)`, `int(t)`, `bool(t)` and indexing
    with a 0-d tensor run (a device -> host copy and, on a GPU, a sync)."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket is torch.ops.aten._local_scalar_dense:
            self.calls[str(func)] += 1
        return func(*args, **(kwargs or {}))


NO_ITEM_CASES = [*strategies.names(), "sundew-fixed-threshold"]


@pytest.mark.parametrize("name", NO_ITEM_CASES)
def test_the_eager_step_reads_no_scalar_back_to_the_host(name):
    optimizer = fa.adam(fa.warmup_cosine(0.01, total_steps=10, warmup_steps=2), weight_decay=0.1)
    if name == "sundew-fixed-threshold":
        model, strategy = tiny_mlp(), fa.sundew(controller=fa.ControllerConfig(target_rate=RATE,
                                                                                initial_threshold=0.5))
        state = fa.init_state(model, optimizer, strategy)
        step = fa.make_train_step(model, fa.cross_entropy, optimizer, strategy)
        name = "sundew"
    else:
        state, step = _setup(name, optimizer=optimizer)
    state, _ = step(state, _batch(name, 0))  # the first step measures FLOPs per shape (on the meta device)
    with _HostReads() as reads:
        step(state, _batch(name, 1))
    assert not reads.calls, dict(reads.calls)


class _SyncingOps(TorchDispatchMode):
    """Counts ops whose output size depends on tensor values (`nonzero`, `masked_select`, indexing with a
    boolean mask): on a GPU each one makes the host wait for the device."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        bool_index = packet is torch.ops.aten.index and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])
        if packet in (torch.ops.aten.nonzero, torch.ops.aten.masked_select) or bool_index:
            self.calls[str(func) + (" (boolean mask)" if bool_index else "")] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["full", "random", "stale", "prioritized", "rho_loss", "proxy"])
def test_fixed_count_strategies_gather_their_sub_batch_without_a_data_dependent_shape(name):
    state, step = _setup(name)
    state, _ = step(state, _batch(name, 0))
    with _SyncingOps() as ops:
        step(state, _batch(name, 1))
    assert not ops.calls, dict(ops.calls)


def test_sundew_varies_its_count_so_it_sizes_the_sub_batch_once_per_step():
    state, step = _setup("sundew")
    state, _ = step(state, _batch("sundew", 0))
    with _SyncingOps() as ops:
        step(state, _batch("sundew", 1))
    assert sum(ops.calls.values()) == 1, dict(ops.calls)
