import torch
from tensordict import TensorDict

from functional_ast.core import significance as sig


def test_normalise_by_mean_range_and_centre():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, 100.0])
    y = sig.normalise_by_mean(x)
    assert y.min() >= 0 and y.max() <= 1
    assert torch.allclose(sig.normalise_by_mean(torch.full((5,), 3.0)), torch.full((5,), 0.5))
    # v / mean clamped to [0, 2] then halved
    assert torch.allclose(y, (x / x.mean()).clamp(0, 2) / 2)


def test_seed_rule_weights_and_range():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 3, 8, 8, generator=g) * torch.rand(64, 1, 1, 1, generator=g)
    loss = torch.rand(64, generator=g).pow(3) * 5
    scored = TensorDict(loss=loss, statistic=sig.intensity(images), batch_size=[64])  # what the step scores
    s = sig.loss_intensity(scored, TensorDict(image=images, batch_size=[64]))
    expected = 0.7 * sig.normalise_by_mean(loss) + 0.3 * sig.normalise_by_mean(images.flatten(1).std(1, unbiased=False))
    assert torch.allclose(s, expected)
    assert s.min() >= 0 and s.max() <= 1


def test_degenerate_inputs_stay_finite_and_in_range():
    zeros = TensorDict(loss=torch.zeros(8), statistic=sig.intensity(torch.zeros(8, 3, 4, 4)), batch_size=[8])
    flat_images = TensorDict(image=torch.zeros(8, 3, 4, 4), batch_size=[8])
    s = sig.loss_intensity(zeros, flat_images)
    assert torch.isfinite(s).all() and (s == 0).all()
    nan_loss = TensorDict(loss=torch.tensor([float("nan"), 1.0, float("inf"), 2.0]), batch_size=[4])
    s = sig.loss_only(nan_loss, None)
    assert torch.isfinite(s).all() and s.min() >= 0 and s.max() <= 1


def test_grad_norm_significance_is_pluggable():
    scored = TensorDict(loss=torch.ones(4), grad_norm=torch.tensor([1.0, 2.0, 3.0, 2.0]), batch_size=[4])
    assert torch.allclose(sig.grad_norm(scored, None), torch.tensor([0.25, 0.5, 0.75, 0.5]))
