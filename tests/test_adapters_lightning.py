"""The Lightning callback: a LightningModule whose training_step returns per-sample losses, selection by the
adapters, and resume from Lightning's own checkpoint mid-epoch."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

pl = pytest.importorskip("lightning.pytorch")

from conftest import assert_tree_equal  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from functional_ast.adapters import Sampler, Selector  # noqa: E402
from functional_ast.adapters.lightning import SelectionCallback  # noqa: E402

N, BATCH, RATE, EPOCHS = 64, 8, 0.25, 3


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch["x"]), batch["y"], reduction="none")  # per sample

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _rows():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (N,), generator=g)
    x = torch.randn(N, 6, generator=g) + y.view(-1, 1) * 0.7
    return [{"x": x[i], "y": y[i], "index": torch.tensor(i)} for i in range(N)]


def _fit(tmp_path, adapter, *, save_at=None, ckpt_path=None, name="run"):
    """Fit Tiny with the adapter's callback; `save_at`: Lightning's ModelCheckpoint saves after that step."""
    module, callback = Tiny(), SelectionCallback(adapter)
    sampler_or_batches = dict(batch_sampler=callback.sampler) if isinstance(adapter, Sampler) else \
        dict(batch_size=BATCH, shuffle=False)
    callbacks = [callback]
    if save_at is not None:
        callbacks.append(pl.callbacks.ModelCheckpoint(tmp_path / name, "{step}", every_n_train_steps=save_at,
                                                      save_top_k=-1))
    trainer = pl.Trainer(max_epochs=EPOCHS, callbacks=callbacks, accelerator="cpu", logger=False,
                         enable_checkpointing=save_at is not None, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's notes on workers, and that a plain DataLoader is not resumable
        trainer.fit(module, DataLoader(_rows(), **sampler_or_batches), ckpt_path=ckpt_path)
    return trainer, module, adapter


def _sampler():
    return Sampler("stale", N, BATCH, RATE, seed=1, warmup_epochs=1)


def test_the_callback_trains_what_the_sampler_selects(tmp_path):
    trainer, module, sampler = _fit(tmp_path, _sampler())
    counters = sampler.counters
    # 1 warm-up epoch of 8 batches of 8, then 2 epochs of 2 pools of 32 training 8 each
    assert counters["samples_trained"] == N + 2 * 2 * 8 and trainer.global_step == 8 + 2 * 2
    assert "training_step" not in vars(module)  # the wrapper is taken off at teardown


def test_resume_from_lightnings_checkpoint_mid_epoch_ends_as_the_uninterrupted_run(tmp_path):
    # Lightning saves after step 11: the warm-up's 8 batches, epoch 1's 2 pools and the first of epoch 2's 2
    _, whole, whole_sampler = _fit(tmp_path, _sampler(), save_at=11, name="whole")
    _, resumed, resumed_sampler = _fit(tmp_path, _sampler(), ckpt_path=tmp_path / "whole" / "step=11.ckpt",
                                       name="resumed")
    assert resumed_sampler.counters["samples_trained"] == whole_sampler.counters["samples_trained"]
    assert_tree_equal(resumed_sampler.state, whole_sampler.state)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_selector_in_the_callback_selects_and_resumes_at_an_epoch_end(tmp_path):
    """A Selector selects within the DataLoader's own batches. A plain DataLoader starts its epoch again after a
    mid-epoch resume (Lightning warns), so this resumes from the checkpoint at an epoch's end; mid-epoch needs a
    resumable loader (the Selector's `position` says where it left off)."""
    def selector():
        return Selector("sundew", N, 0.5, seed=1)

    _, whole, whole_selector = _fit(tmp_path, selector(), save_at=16, name="whole")  # 8 steps an epoch
    _, resumed, resumed_selector = _fit(tmp_path, selector(), ckpt_path=tmp_path / "whole" / "step=16.ckpt",
                                        name="resumed")
    counters = whole_selector.counters
    assert counters["samples_seen"] == EPOCHS * N and 0 < counters["samples_trained"] < EPOCHS * N
    assert_tree_equal(TensorDict(resumed_selector.state_dict()["state"]),
                      TensorDict(whole_selector.state_dict()["state"]))
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
