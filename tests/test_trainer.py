"""The library's trainer: fit and compare with your own model and data, resume by loading the state, budgets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, assert_tree_equal
from tensordict import TensorDict
from torch import nn
from torchvision.io import write_png

import functional_ast as fa
from functional_ast import strategies
from functional_ast.core import optim, sampling
from functional_ast.edges import checkpoint
from functional_ast.train.trainer import Data, Run

MODEL_SOURCE = '''
from tensordict import TensorDict
from torch import nn

def mynet(num_classes, in_channels):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
'''


def _digits(root, per_class_train=20, per_class_test=5, classes=3, size=28):
    """A tiny 28x28 one-channel ImageFolder: the class shifts the brightness."""
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                img = (torch.rand(1, size, size, generator=g) * 60 + 80 * c).clamp(0, 255).to(torch.uint8)
                write_png(img, str(folder / f"{i}.png"))
    return root


def _tensors(n=96, classes=4, seed=0, size=8, channels=1):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    images = (torch.rand(n, channels, size, size, generator=g) * 60 + 60 * labels.view(-1, 1, 1, 1)).to(torch.uint8)
    return images, labels


def _net(classes=4, channels=1):
    return lambda: nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))


def test_the_generic_command_trains_your_model_on_a_one_channel_folder_and_tracks_it(tmp_path):
    import mlflow
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    data = _digits(tmp_path / "digits")
    (tmp_path / "mymodule.py").write_text(MODEL_SOURCE)
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))
    out = subprocess.run([sys.executable, "-m", "functional_ast", "--data", str(data), "--model", "mymodule:mynet",
                          "--epochs", "2", "--warmup-epochs", "1", "--target-rate", "0.3", "--batch-size", "16",
                          "--tracking-uri", uri, "--no-progress"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("functional_ast")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["model"] == "mymodule:mynet"
    assert run.data.params["image_shape"] == "1x28x28" and run.data.params["classes"] == "3"
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "digits" and len(dataset.dataset.digest) >= 8
    (logged,) = run.outputs.model_outputs
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # as a user would, to load from this store
    try:
        model = mlflow.pytorch.load_model(f"models:/{logged.model_id}")
    finally:
        mlflow.set_tracking_uri(previous)
    images = torch.rand(5, 1, 28, 28)
    assert model(images).shape == (5, 3)


def test_fit_with_your_model_and_tensors_returns_a_result_with_history():
    train, test = _tensors(), _tensors(n=32, seed=1)
    result = fa.fit(_net(), train, test, fa.TrainConfig(strategy="stale", epochs=3, batch_size=16, target_rate=0.25,
                                                                 cooldown_epochs=0))
    s = result.summary
    assert s["epochs"] == 3 and len(result.history.epochs) == 3
    assert s["samples_trained"] == 96 + 2 * 16  # warm-up on all 96, then a batch of each pool of 64 per epoch
    assert [e["epoch_activation_rate"] for e in result.history.epochs] == [1.0, 0.25, 0.25]
    assert 0.0 <= s["test_accuracy"] <= 1.0 and s["samples_scored"] == 0
    steps, losses = result.history.series("loss")
    assert steps == list(range(s["steps"])) and all(v == v for v in losses)


def test_bad_config_and_data_are_one_clear_error_naming_the_field():
    with pytest.raises(fa.ConfigError, match="TrainConfig.target_rate"):
        fa.TrainConfig(target_rate=0.0)
    with pytest.raises(fa.ConfigError, match="TrainConfig.strategy must be one of"):
        fa.TrainConfig(strategy="magic")
    with pytest.raises(fa.ConfigError, match="time_budget or flop_budget"):
        fa.TrainConfig(time_budget=1.0, flop_budget=1e9)
    with pytest.raises(fa.ConfigError, match="batch size 512 is larger than the training set"):
        fa.fit(_net(), _tensors(), _tensors(32), fa.TrainConfig(batch_size=512))


def test_memory_format_auto_means_channels_last_on_a_cpu_only(monkeypatch):
    from functional_ast.train import trainer

    asked = []
    for name in ("make_train_step", "make_eval_step"):
        real = getattr(trainer, name)
        monkeypatch.setattr(trainer, name,
                            lambda *a, _real=real, **k: asked.append(k["channels_last"]) or _real(*a, **k))
    data = Data.prepare(_tensors(), _tensors(n=32, seed=1))
    Run(_net(), data, fa.TrainConfig(strategy="stale", batch_size=16))
    Run(_net(), data, fa.TrainConfig(strategy="stale", batch_size=16, memory_format="contiguous"))
    assert asked == [True] * 3 + [False] * 3  # all-data step, selective step, eval step

    class ViewsItsActivations(nn.Module):  # a common way to flatten that NHWC activations refuse
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 4)

        def forward(self, x):
            h = self.conv(x)
            return self.head(h.view(h.shape[0], -1))

    asked.clear()  # three channels: with one, NHWC and NCHW are the same strides and any model runs
    data = Data.prepare(_tensors(channels=3), _tensors(n=32, seed=1, channels=3))
    Run(ViewsItsActivations(), data, fa.TrainConfig(strategy="stale", batch_size=16))
    assert asked == [False] * 3  # "auto" keeps NCHW for it
    result = fa.fit(ViewsItsActivations(), data, None, fa.TrainConfig(strategy="stale", epochs=1, batch_size=16))
    assert result.summary["steps"] > 0
    with pytest.raises(RuntimeError, match="view"):  # asked for explicitly, NHWC is what it gets
        fa.fit(ViewsItsActivations(), data, None,
               fa.TrainConfig(strategy="stale", epochs=1, batch_size=16, memory_format="channels_last"))
    assert fa.TrainConfig().channels_last("cpu") and not fa.TrainConfig().channels_last("cuda:0")
    assert fa.TrainConfig(memory_format="channels_last").channels_last("cuda")
    assert not fa.TrainConfig(memory_format="contiguous").channels_last("cpu")
    with pytest.raises(fa.ConfigError, match="TrainConfig.memory_format must be one of auto, channels_last"):
        fa.TrainConfig(memory_format="nhwc")


def test_fit_in_either_memory_format_trains_the_same_model():
    train, test = _tensors(channels=3), _tensors(n=32, seed=1, channels=3)  # one channel would be the same strides
    config = fa.TrainConfig(strategy="stale", epochs=2, batch_size=16, target_rate=0.5)
    results = [fa.fit(_net(channels=3), train, test, config.replace(memory_format=f))
               for f in ("contiguous", "channels_last")]
    assert [e["epoch_activation_rate"] for e in results[0].history.epochs] == [
        e["epoch_activation_rate"] for e in results[1].history.epochs]
    for key in results[0].state["params"].keys():
        torch.testing.assert_close(results[1].state["params"][key], results[0].state["params"][key],
                                   rtol=1e-4, atol=1e-5)


def test_resuming_means_loading_the_state():
    """A run stopped at a safe point and continued from its saved state ends bit-identical to an uninterrupted
    one: position, skip counters, selector tables and history live in the state."""
    train, test = _tensors(), _tensors(n=32, seed=1)
    config = fa.TrainConfig(strategy="prioritized", epochs=4, batch_size=16, target_rate=0.25)
    data = Data.prepare(train, test)
    saved = []

    class KeepSecondSafePoint(fa.Callback):
        def on_safe_point(self, run):
            saved.append(checkpoint._unflatten(*checkpoint._flatten(run.state), None))

    reference = fa.fit(_net(), data, None, config, callbacks=[KeepSecondSafePoint()], safe_point_every=4)
    middle = saved[1]
    assert 0 < int(middle["step"]) < int(reference.state["step"])
    resumed = fa.fit(_net(), data, None, config, state=middle, safe_point_every=4)
    assert_tree_equal(resumed.state.exclude("clock", "history"), reference.state.exclude("clock", "history"))
    accuracies = [[e["test_accuracy"] for e in r.history.epochs] for r in (resumed, reference)]
    assert accuracies[0] == accuracies[1]
    assert resumed.history.series("loss") == reference.history.series("loss")


def test_a_state_of_another_configuration_is_refused_by_fit():
    train, test = _tensors(), _tensors(n=32, seed=1)
    other = fa.fit(_net(), train, test, fa.TrainConfig(strategy="stale", epochs=1, batch_size=16)).state
    with pytest.raises(checkpoint.CheckpointError):
        fa.fit(_net(classes=4), train, test, fa.TrainConfig(strategy="sundew", epochs=1, batch_size=16), state=other)


def test_a_flop_budget_ends_every_strategy_at_the_budget_with_its_schedule_annealed():
    train, test = _tensors(), _tensors(n=32, seed=1)
    full = fa.fit(_net(), train, test, fa.TrainConfig(strategy="full", epochs=2, batch_size=16))
    budget = full.summary["flops_spent"]
    for name in ("full", "random", "stale", "sundew"):
        config = fa.TrainConfig(strategy=name, batch_size=16, target_rate=0.25, flop_budget=budget,
                                cooldown_epochs=1, lr=0.05)
        result = fa.fit(_net(), train, test, config)
        spent = result.summary["flops_spent"]
        per_step = spent / result.summary["steps"]
        assert budget <= spent <= budget + 3 * per_step, name  # stops at the first step past the budget
        opt = result.state["opt"]
        horizon = float(next(v for k, v in opt.items(include_nested=True, leaves_only=True)
                             if (k if isinstance(k, str) else k[-1]) == "horizon"))
        # the schedule's horizon was re-planned to the steps the budget afforded: it ended annealed
        assert abs(horizon - result.summary["steps"]) <= max(2, 0.1 * horizon), (name, horizon)
        if name != "full":
            assert result.history.epochs[-1]["all_data"] == 1.0, name  # the cool-down fitted inside the budget


def test_index_only_strategies_gather_only_the_images_they_train():
    strategy = strategies.stale(num_samples=100, rate=0.2)
    selector = strategy.init()
    order = sampling.epoch_order(100, seed=0, epoch=1)
    drawn = sampling.draw(strategy, selector, order, batch=0, size=50, seed=0, epoch=1, all_data=False)
    assert drawn.selected and drawn.index.shape == (10,)
    assert set(drawn.index.tolist()) <= set(order[:50].tolist())
    again = sampling.draw(strategy, selector, order, batch=0, size=50, seed=0, epoch=1, all_data=False)
    assert torch.equal(drawn.index, again.index)  # a pure function of (seed, epoch, batch) and the state
    pool = sampling.draw(strategies.sundew(0.2), strategies.sundew(0.2).init(), order, batch=1, size=50, seed=0,
                         epoch=1, all_data=False)
    assert not pool.selected and torch.equal(pool.index, order[50:100])  # a scoring strategy gets the pool


def test_index_only_selection_runs_on_the_device_of_the_selector_tables():
    # A selector TensorDict built without a device (as the state's sub-TensorDicts can be) must still select on
    # its tables' device: on CUDA, candidates left on the CPU order's device met CUDA tables (InfoBatch failed).
    seen = {}

    def select(state, batch, key, score):
        seen["index"], seen["key"] = batch["index"].device, key.device
        return strategies.Selection(torch.ones(batch.shape[0], dtype=torch.bool), None, state, TensorDict(),
                                    torch.arange(3))

    strategy = strategies.Strategy("probe", lambda device=None: None, select, index_only=True)
    selector = TensorDict(loss=torch.zeros(100, device="meta"))
    assert selector.device is None
    order = sampling.epoch_order(100, seed=0, epoch=1)
    drawn = sampling.draw(strategy, selector, order, batch=0, size=50, seed=0, epoch=1, all_data=False)
    assert seen == {"index": torch.device("meta"), "key": torch.device("meta")}
    assert torch.equal(drawn.index, order[:3])


def test_prioritized_draws_follow_the_state_table_and_are_pure():
    table = torch.full((64,), 1e-3)
    table[7] = 100.0
    key = fa.prng.key(3)
    index, weight = sampling.prioritized_draw(table, 200, alpha=0.6, beta=0.4, key=key)
    again, _ = sampling.prioritized_draw(table, 200, alpha=0.6, beta=0.4, key=key)
    assert torch.equal(index, again) and (index == 7).float().mean() > 0.5
    assert float(weight.max()) <= 1.0 and float(weight[index == 7].max()) < float(weight[index != 7].max())


def test_compare_interleaves_runs_and_returns_them_in_the_order_given():
    train, test = _tensors(), _tensors(n=32, seed=1)
    order = []

    class Log(fa.Callback):
        def on_epoch_end(self, run, record):
            order.append((run.config.strategy, run.config.seed, record["epoch"]))

    configs = [fa.TrainConfig(strategy=s, seed=seed, epochs=2, batch_size=16, target_rate=0.25)
               for seed in (0, 1) for s in ("full", "random")]
    results = fa.compare(_net(), train, test, configs, callbacks_for=lambda c: [Log()])
    assert [(r.summary["strategy"], r.summary["seed"]) for r in results] == [
        ("full", 0), ("random", 0), ("full", 1), ("random", 1)]
    assert [e for _, _, e in order] == [1, 1, 1, 1, 2, 2, 2, 2]  # round-robin, an epoch each
    alone = fa.fit(_net(), train, test, configs[1])
    assert alone.summary["test_accuracy"] == results[1].summary["test_accuracy"]  # turns change nothing computed


def test_horizon_schedule_matches_warmup_cosine_and_can_be_replanned():
    fixed = optim.warmup_cosine(1.0, total_steps=10, warmup_steps=2)
    over = optim.warmup_cosine_over_horizon(1.0, horizon=10, warmup_steps=2)
    for c in range(12):
        count = torch.tensor(c)
        assert float(over.fn(count, torch.tensor(10.0))) == pytest.approx(float(fixed(count)))
    from tensordict import TensorDict

    state = optim.sgd(over).init(TensorDict(w=torch.zeros(3)))
    longer = optim.set_horizon(state, 20)
    key = next(k for k in state.keys(True, True) if k[-1] == "horizon")
    assert float(state[key]) == 10.0 and float(longer[key]) == 20.0  # the input is untouched


def test_sundew_remembered_gates_on_the_table_without_scoring_and_meets_its_target():
    train, test = _tensors(n=640, seed=2), _tensors(n=64, seed=3)
    config = fa.TrainConfig(strategy="sundew_remembered", epochs=4, batch_size=16, target_rate=0.25, cooldown_epochs=0)
    result = fa.fit(_net(), train, test, config)
    s = result.summary
    assert s["samples_scored"] == 0  # no scoring forward: the gate reads remembered loss and intensity
    gated = [e["epoch_activation_rate"] for e in result.history.epochs if not e["all_data"]]
    assert len(gated) == 3 and all(abs(rate - 0.25) < 0.08 for rate in gated), gated
    selector = result.state["selector"]
    assert bool(selector["seen"].all()) and float(selector["intensity"].min()) > 0  # filled during warm-up
    steps, thresholds = result.history.series("threshold")
    assert len(thresholds) > 0 and steps[0] >= 640 // 16  # the controller moves only after warm-up


def test_sundew_remembered_select_is_pure_and_prefers_high_remembered_loss():
    strategy = strategies.sundew_remembered(num_samples=200, target_rate=0.2)
    state = strategy.init()
    loss = torch.linspace(0.01, 2.0, 200)
    state = TensorDict(dict(state.items(), loss=loss, seen=torch.ones(200, dtype=torch.bool),
                               intensity=torch.ones(200)))
    before = state.clone()
    pool = TensorDict(index=torch.arange(200), batch_size=[200])
    picked = [strategy.select(state, pool, fa.prng.key(i), None) for i in range(20)]
    assert_tree_equal(state, before)  # nothing mutated
    rate = torch.stack([p.mask for p in picked]).float().mean(0)
    assert rate[150:].mean() > 3 * rate[:50].mean()  # higher remembered loss, higher chance to be trained


def test_remaining_steps_counts_warmup_selective_and_cooldown_at_their_costs():
    from functional_ast.train.plan import Plan, remaining_steps

    plan = Plan(num_samples=1000, batch_size=10, pool_size=50, epochs=5, warmup_epochs=1, cooldown_epochs=1,
                gated=True)  # 100 all-data steps per epoch, 20 selective
    # at the start: 100 warm-up steps (cost 1) + cool-down 100 (cost 1) reserved, the rest at cost 0.5
    assert remaining_steps(plan, 0, 0, left=400.0, cost_all_data=1.0, cost_selective=0.5) == 100 + 400 + 100
    # half-way through warm-up, 50 all-data steps are left
    assert remaining_steps(plan, 0, 50, left=350.0, cost_all_data=1.0, cost_selective=0.5) == 50 + 400 + 100
    # less than the cool-down left: only what it affords
    assert remaining_steps(plan, 3, 0, left=30.0, cost_all_data=1.0, cost_selective=0.5) == 30
    full = Plan(num_samples=1000, batch_size=10, pool_size=10, epochs=5, warmup_epochs=0, cooldown_epochs=0,
                gated=False)
    assert remaining_steps(full, 2, 0, left=30.0, cost_all_data=2.0, cost_selective=2.0) == 15


def test_small_loss_prefers_samples_the_model_gets_right():
    strategy = strategies.build("small_loss", strategies.Context(num_samples=200, target_rate=0.2, pool_size=128))
    state = TensorDict(loss=torch.linspace(0.01, 4.0, 200), seen=torch.ones(200, dtype=torch.bool))
    pool = TensorDict(index=torch.arange(200), batch_size=[200])
    picked = torch.stack([strategy.select(state, pool, fa.prng.key(i), None).mask for i in range(50)]).float()
    assert int(picked[0].sum()) == 40  # a fixed count: round(0.2 * 200)
    assert picked[:, :50].mean() > 3 * picked[:, 150:].mean()  # low remembered loss, trained more often


def test_infobatch_keeps_the_hard_prunes_the_easy_at_its_rate_and_reweights_them():
    strategy = strategies.build("infobatch", strategies.Context(num_samples=400, target_rate=0.3, pool_size=128))
    seen = torch.arange(400) < 300  # the last 100 never trained
    state = TensorDict(loss=torch.where(seen, torch.linspace(0.0, 2.0, 400), 0.0), seen=seen)
    easy = seen & (state["loss"] < state["loss"][seen].mean())  # the mean over the seen samples only
    assert 140 <= int(easy.sum()) <= 160
    before = state.clone()
    pool = TensorDict(index=torch.arange(400), batch_size=[400])
    picks = [strategy.select(state, pool, fa.prng.key(i), None) for i in range(40)]
    assert_tree_equal(state, before)  # nothing mutated
    kept = torch.stack([p.mask for p in picks]).float()
    assert bool(kept[:, ~easy].eq(1).all())  # above the mean, or never trained: always kept
    assert 0.45 < float(kept[:, easy].mean()) < 0.55  # below it: kept with probability 1 - 0.5
    assert len({int(k.sum()) for k in kept}) > 1  # the trained count varies
    weight = picks[0].weight
    assert bool(weight[easy].eq(2.0).all()) and bool(weight[~easy].eq(1.0).all())
    assert picks[0].index.tolist() == picks[0].mask.nonzero()[:, 0].tolist()


def test_infobatch_trains_in_batch_sized_pools_without_scoring():
    train, test = _tensors(n=640, seed=2), _tensors(n=64, seed=3)
    config = fa.TrainConfig(strategy="infobatch", epochs=3, batch_size=16, target_rate=0.1, cooldown_epochs=0)
    result = fa.fit(_net(), train, test, config)
    assert result.summary["samples_scored"] == 0
    assert result.summary.target_rate is None  # it picks its own share: the summary claims no target
    epochs = result.history.epochs
    assert [e["all_data"] for e in epochs] == [1.0, 0.0, 0.0]
    for e in epochs[1:]:  # rate about 1 - 0.5 * (below-mean share), whatever target_rate says
        assert 0.5 < e["epoch_activation_rate"] < 0.95, e
    steps = [e["steps"] for e in epochs]  # cumulative: a pool is one batch (not batch / target_rate)
    assert steps == [40, 80, 120]
    assert bool(result.state["selector", "seen"].all())


def test_under_a_budget_epochs_does_not_cap_the_cooldown():
    from functional_ast.train.plan import Plan

    capped = fa.TrainConfig(strategy="stale", epochs=4, warmup_epochs=1, cooldown_epochs=8)
    assert Plan.of(capped, 1000).cooldown_epochs == 3  # an epoch-ended run cools down in its last 3 epochs
    assert Plan.of(capped.replace(time_budget=60.0), 1000).cooldown_epochs == 8  # a budget ends it, not epochs
    assert Plan.of(capped.replace(strategy="full", time_budget=60.0), 1000).cooldown_epochs == 0


def test_under_a_budget_the_cooldown_comes_at_the_end_whatever_epochs_says():
    train, test = _tensors(), _tensors(n=32, seed=1)
    full = fa.fit(_net(), train, test, fa.TrainConfig(strategy="full", epochs=4, batch_size=16))
    # epochs=2 would put the cool-down at the second epoch; under a budget of 4 full epochs it must wait
    config = fa.TrainConfig(strategy="stale", epochs=2, batch_size=16, target_rate=0.25, cooldown_epochs=1,
                            flop_budget=full.summary["flops_spent"])
    flags = [e["all_data"] for e in fa.fit(_net(), train, test, config).history.epochs]
    assert flags[0] == 1.0 and flags[-1] == 1.0 and flags.count(0.0) >= 4, flags
    first_cooldown = flags.index(1.0, 1)
    assert all(f == 1.0 for f in flags[first_cooldown:]) and all(f == 0.0 for f in flags[1:first_cooldown]), flags


def test_label_smoothing_trains_on_cross_entropy_against_smoothed_labels():
    """The built-in image task's per-sample loss with label_smoothing is PyTorch's smoothed cross-entropy, so
    training differs from plain cross-entropy; with a task of one's own it is refused, as are values outside [0, 1)."""
    import torch.nn.functional as F

    logits, labels = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(fa.image_classification(0.2).loss(logits, labels),
                               F.cross_entropy(logits, labels, reduction="none", label_smoothing=0.2))
    assert torch.equal(fa.image_classification().loss(logits, labels), F.cross_entropy(logits, labels,
                                                                                       reduction="none"))
    train, test = _tensors(), _tensors(n=32, seed=1)
    config = fa.TrainConfig(strategy="full", epochs=1, batch_size=16)
    plain, smoothed = (fa.fit(_net(), train, test, config.replace(label_smoothing=s)) for s in (0.0, 0.3))
    assert not torch.equal(plain.state["params"]["0.weight"], smoothed.state["params"]["0.weight"])
    with pytest.raises(fa.ConfigError, match="label_smoothing"):
        fa.fit(_net(), train, test, config.replace(label_smoothing=0.3), task=fa.image_classification())
    with pytest.raises(fa.ConfigError, match="label_smoothing"):
        fa.TrainConfig(label_smoothing=1.0)
