"""torch.distributed: two gloo processes given the same global batches = one process over them."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import assert_tree_equal, make_batch, tiny_bn_model, tiny_mlp

from functional_ast import strategies
from functional_ast.core import distributed, optim
from functional_ast.core.losses import cross_entropy
from functional_ast.core.step import init_state, make_train_step
from functional_ast.edges import checkpoint

# (strategy, target rate, model): "random" at 1/32 trains one sample per step, so one rank trains none
# (it still joins the all-reduce); the BatchNorm case normalises with per-rank statistics (as DDP without
# SyncBatchNorm), so it is checked for agreement between ranks, not with one process.
CASES = {"full": ("full", 0.3, tiny_mlp), "random": ("random", 0.3, tiny_mlp), "sundew": ("sundew", 0.3, tiny_mlp),
         "stale": ("stale", 0.3, tiny_mlp), "prioritized": ("prioritized", 0.3, tiny_mlp),
         "random-one-sample": ("random", 1 / 32, tiny_mlp), "sundew-batchnorm": ("sundew", 0.3, tiny_bn_model)}
MATCHES_ONE_PROCESS = [c for c in CASES if c != "sundew-batchnorm"]
GLOBAL_BATCH, STEPS, SAMPLES = 32, 5, 64


def _global_batches():
    """STEPS global batches over a dataset of SAMPLES indices (each index appears in several)."""
    out = []
    for s in range(STEPS):
        b = make_batch(GLOBAL_BATCH, seed=s)
        b["index"] = (torch.arange(GLOBAL_BATCH) + s * 16) % SAMPLES
        out.append(b)
    return out


def _run(case: str, collective: distributed.Collective):
    name, rate, model_fn = CASES[case]
    strategy = strategies.build(name, strategies.Context(num_samples=SAMPLES, target_rate=rate, pool_size=128))
    model = model_fn()
    opt = optim.sgd(0.1, momentum=0.9)
    state = init_state(model, opt, strategy, key=7)
    step = make_train_step(model, cross_entropy, opt, strategy, collective=collective)
    rates = []
    for batch in _global_batches():  # every rank gets the whole global batch; the step splits the work
        state, metrics = step(state, batch)
        rates.append(metrics["activation_rate"])
    return state, torch.stack(rates)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        collective = distributed.process_group_collective()
        for case in CASES:
            state, rates = _run(case, collective)
            checkpoint.save(f"{out_dir}/{case}/rank{rank}", state, {"rates": rates.tolist()})
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_states(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, join=True)
    return tmp


def _rank_states(root, case):
    return [checkpoint.load(checkpoint.latest(root / case / f"rank{r}")) for r in range(2)]


@pytest.mark.parametrize("case", list(CASES))
def test_every_rank_holds_the_same_state(two_process_states, case):
    (s0, m0), (s1, m1) = _rank_states(two_process_states, case)
    # params, buffers, optimiser, selector (gate, controller, tables), work counters, rng, step
    assert set(s0.keys(True, True)) == set(s1.keys(True, True))
    for key in s0.keys(True, True):
        assert torch.equal(s0[key], s1[key]), key
    assert m0["rates"] == m1["rates"]
    assert int(s0["step"]) == STEPS


@pytest.mark.parametrize("case", MATCHES_ONE_PROCESS)
def test_two_gloo_processes_match_one_process_over_the_same_global_batches(two_process_states, case):
    single, single_rates = _run(case, distributed.LOCAL)
    (s0, m0), _ = _rank_states(two_process_states, case)
    # ... which equals the single process's, to floating-point tolerance (sums are reassociated).
    for key in single.keys(True, True):
        if single[key].is_floating_point():
            torch.testing.assert_close(s0[key], single[key], rtol=1e-5, atol=1e-6, msg=str(key))
        else:
            assert torch.equal(s0[key], single[key]), key
    # The controller saw the global rate: every rank reports the single process's rate.
    assert m0["rates"] == pytest.approx(single_rates.tolist())


def test_shard_bounds_cover_the_batch_once():
    for n in (7, 8, 128, 13):
        for world in (1, 2, 3, 4):
            bounds = [distributed.shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(s - t for t, s in bounds) - min(s - t for t, s in bounds) <= 1


def _torchrun(flags, cwd):
    import os
    import subprocess
    import sys

    from conftest import REPO

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           "-m", "functional_ast", *flags]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    # Its own session, so that a kill reaches the launcher and its workers (never left behind).
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def test_torchrun_cli_killed_and_resumed_ends_as_an_uninterrupted_torchrun_run(tmp_path):
    """SIGKILL to the whole torchrun process group part-way, then --resume under torchrun: the same MLflow run
    finishes with exactly the parameters and test accuracy of an uninterrupted 2-process run."""
    import json
    import os
    import signal
    import time

    from test_cli import _image_folder

    # 16x16 images: 2x2 maps at the cnn's last BatchNorm, so a rank's share of one gated sample normalises
    data = _image_folder(tmp_path / "images", size=16)
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    flags = ["--data", str(data), "--epochs", "10", "--warmup-epochs", "1", "--batch-size", "16", "--pool-size", "32",
             "--strategy", "sundew", "--target-rate", "0.25", "--checkpoint-every", "5", "--no-progress",
             "--tracking-uri", uri,
             "--experiment", "dist", "--run-name", "d", "--device", "cpu"]
    runs = tmp_path / "store" / "checkpoints" / "dist" / "d"
    proc = _torchrun(flags, tmp_path)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not any(int(p.stem.split("-")[1]) >= 20 for p in runs.glob("*/step-*.pt")):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # launcher and workers: the kill under test, or clean-up on failure
        proc.wait()
    (folder,) = runs.iterdir()
    assert not (folder / "result.json").exists()
    run_id = json.loads((folder / "run.json").read_text())["run_id"]

    for extra in (["--resume"], ["--checkpoint-dir", str(tmp_path / "reference")]):
        done = _torchrun(flags + extra, tmp_path)
        try:
            assert done.wait(timeout=300) == 0, done.stderr.read().decode()[-3000:]
        finally:
            if done.poll() is None:
                os.killpg(done.pid, signal.SIGKILL)
    (reference,) = (tmp_path / "reference" / "d").iterdir()
    resumed_state, _ = checkpoint.load(checkpoint.latest(folder))
    reference_state, _ = checkpoint.load(checkpoint.latest(reference))
    # Everything but the wall-clock ("clock", and the epoch records' times in "history") is exact.
    resumed_state, reference_state = (s.exclude("clock", ("history", "epochs"))
                                      for s in (resumed_state, reference_state))
    assert_tree_equal(resumed_state, reference_state)
    resumed = json.loads((folder / "result.json").read_text())["summary"]
    uninterrupted = json.loads((reference / "result.json").read_text())["summary"]
    assert resumed["mlflow_run_id"] == run_id and resumed["test_accuracy"] == uninterrupted["test_accuracy"]
    assert resumed["samples_trained"] == uninterrupted["samples_trained"]
