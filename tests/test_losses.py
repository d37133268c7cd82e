import torch
import torch.nn.functional as F
from conftest import assert_tree_equal, make_batch, tiny_bn_model

from functional_ast.core import losses


def _setup():
    model = tiny_bn_model()
    params, buffers = losses.params_of(model), losses.buffers_of(model)
    buffers["1.running_mean"] = torch.randn(8) * 0.1  # non-trivial running stats
    buffers["1.running_var"] = torch.rand(8) + 0.5
    return model, losses.make_apply(model), params, buffers


def test_per_sample_losses_match_batched_reduction_none():
    model, apply, params, buffers = _setup()
    b = make_batch(16)
    model.load_state_dict({**dict(params.items()), **dict(buffers.items())})
    model.train()
    with torch.no_grad():
        expected = F.cross_entropy(model(b["image"]), b["label"], reduction="none")
    got = losses.per_sample_losses(apply, losses.cross_entropy, params, buffers, b["image"], b["label"])
    torch.testing.assert_close(got, expected)


def test_train_apply_returns_new_buffers_and_leaves_inputs_alone():
    _, apply, params, buffers = _setup()
    before = buffers.clone()
    _, new_buffers = apply.train(params, buffers, make_batch(16)["image"])
    assert_tree_equal(buffers, before)
    assert not torch.equal(new_buffers["1.running_mean"], before["1.running_mean"])
    assert int(new_buffers["1.num_batches_tracked"]) == 1


def _loop_grad_norms(model, params, buffers, b, keys):
    model.load_state_dict({**dict(params.items()), **dict(buffers.items())})
    model.eval()
    norms = []
    for i in range(b.batch_size[0]):
        model.zero_grad()
        F.cross_entropy(model(b["image"][i:i + 1]), b["label"][i:i + 1]).backward()
        named = dict(model.named_parameters())
        norms.append(torch.sqrt(sum(named[k].grad.pow(2).sum() for k in keys)))
    return torch.stack(norms)


def test_per_sample_grad_norms_match_a_loop_over_single_samples():
    model, apply, params, buffers = _setup()
    b = make_batch(12)
    for keys in (list(params.keys()), losses.last_layer_keys(params)):
        got = losses.per_sample_grad_norms(apply, losses.cross_entropy, params, buffers, b["image"], b["label"],
                                           keys, chunk_size=5)
        expected = _loop_grad_norms(model, params, buffers, b, keys)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_last_layer_keys_is_the_head():
    _, _, params, _ = _setup()
    assert losses.last_layer_keys(params) == ["5.weight", "5.bias"]


def test_loss_and_grad_weights():
    _, apply, params, buffers = _setup()
    b = make_batch(8)
    lg = losses.make_loss_and_grad(apply, losses.cross_entropy)
    _, (loss_all, _, per_sample) = lg(params, buffers, b["image"], b["label"], torch.ones(8))
    torch.testing.assert_close(loss_all, per_sample.mean())
    w = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 3.0])
    _, (loss_w, _, per_sample_w) = lg(params, buffers, b["image"], b["label"], w)
    torch.testing.assert_close(loss_w, (per_sample_w * w).sum() / 4)
