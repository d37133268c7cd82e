"""Tests for functional_ast.models: shapes, functional_call, per-sample grads, training."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from functional_ast.models import MODELS, airbench94, build_model, cnn, resnet, vit


def tiny(name: str, num_classes: int, in_channels: int, image_size: int) -> torch.nn.Module:
    """A small instance of model ``name`` so that the tests stay fast."""
    if name == "cnn":
        return cnn(num_classes, in_channels, width=4)
    if name == "resnet":
        return resnet(num_classes, in_channels, width=4, blocks_per_stage=1)
    if name == "airbench94":
        return airbench94(num_classes, in_channels, image_size=image_size)
    return vit(num_classes, in_channels, image_size=image_size, patch_size=4, dim=16, depth=2, heads=2)


NAMES = ["cnn", "resnet", "vit", "airbench94"]


def state(model: torch.nn.Module) -> tuple[dict, dict]:
    """Detached clones of the module's parameters and buffers."""
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    return params, buffers


def randomise_bn_stats(model: torch.nn.Module) -> None:
    """Give BatchNorm non-trivial running statistics so eval mode is a real test."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_classes,in_channels,size", [(3, 1, 16), (10, 3, 32), (7, 2, 8)])
def test_output_shape(name, num_classes, in_channels, size):
    torch.manual_seed(0)
    if name == "airbench94" and size < 16:  # three 2x2 pools after the 2x2 whitening
        with pytest.raises(ValueError, match="at least 16 pixels"):
            tiny(name, num_classes, in_channels, size)
        return
    model = tiny(name, num_classes, in_channels, size)
    out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_conv_models_accept_other_image_sizes(name):
    model = tiny(name, 5, 3, 32)
    assert model(torch.randn(2, 3, 12, 20)).shape == (2, 5)


@pytest.mark.parametrize("name", NAMES)
def test_build_model_defaults_map_images_to_logits(name):
    model = build_model(name, num_classes=4, in_channels=1, image_size=16)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 4)


def test_build_model_unknown_name_lists_choices():
    assert set(MODELS) == {"cnn", "resnet", "vit", "airbench94"}
    with pytest.raises(ValueError) as err:
        build_model("mlp", num_classes=10)
    for name in MODELS:
        assert name in str(err.value)


def test_vit_rejects_bad_sizes():
    with pytest.raises(ValueError):
        vit(image_size=30, patch_size=4)
    with pytest.raises(ValueError):
        vit(dim=10, heads=4)
    with pytest.raises(ValueError):
        tiny("vit", 3, 3, 16)(torch.randn(1, 3, 32, 32))


def test_vit_with_dropout_is_deterministic_in_eval_mode():
    torch.manual_seed(0)
    model = vit(3, 3, image_size=16, dim=16, depth=1, heads=2, dropout=0.5).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [False, True])
def test_functional_call_matches_forward(name, train):
    torch.manual_seed(0)
    model = tiny(name, 3, 1, 16).train(train)
    randomise_bn_stats(model)
    x = torch.randn(4, 1, 16, 16)
    params, buffers = state(model)  # cloned before the forward can update running stats
    expected = model(x)
    got = functional_call(model, (params, buffers), (x,))
    torch.testing.assert_close(got, expected)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # sdpa's CPU kernel under vmap
@pytest.mark.parametrize("name", NAMES)
def test_per_sample_grads_vmap_match_loop(name):
    torch.manual_seed(0)
    model = tiny(name, 3, 1, 16).eval()
    randomise_bn_stats(model)
    params, buffers = state(model)
    x = torch.randn(5, 1, 16, 16)
    y = torch.tensor([0, 1, 2, 1, 0])

    def loss_one(p, xi, yi):
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(logits, yi.unsqueeze(0))

    batched = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    for i in range(len(x)):
        single = grad(loss_one)(params, x[i], y[i])
        for k in params:
            torch.testing.assert_close(batched[k][i], single[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_sgd_steps_lower_loss_on_fixed_batch(name):
    torch.manual_seed(0)
    model = tiny(name, 3, 1, 16).train()
    params, buffers = state(model)
    x = torch.randn(16, 1, 16, 16)
    y = torch.arange(16) % 3

    # Train-mode BatchNorm updates its running stats in place, so under
    # torch.func.grad the buffers must be an explicit input, not a capture.
    def loss(p, b):
        return F.cross_entropy(functional_call(model, (p, b), (x,)), y)

    first = loss(params, buffers).item()
    for _ in range(15):
        g = grad(loss)(params, buffers)
        params = {k: params[k] - 0.05 * g[k] for k in params}
    assert loss(params, buffers).item() < 0.8 * first


@pytest.mark.parametrize("name", NAMES)
def test_default_models_are_deterministic_in_train_mode(name):
    """No dropout by default: the same state and input give the same train-mode output."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, in_channels=1, image_size=16).train()
    params, buffers = state(model)
    x = torch.randn(4, 1, 16, 16)
    first = functional_call(model, (params, {k: v.clone() for k, v in buffers.items()}), (x,))
    second = functional_call(model, (params, {k: v.clone() for k, v in buffers.items()}), (x,))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def test_airbench94_whitens_the_patches_of_its_images_and_trains_no_scale():
    """Its first layer's fixed filters map the images' 2x2 patches to (nearly) unit covariance, each filter
    beside its negation; the filters and the BatchNorm scales are buffers, the whitening bias a parameter."""
    from functional_ast.models.airbench import whitening_filters

    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.5, 0.2], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]])
    images = torch.einsum("dc,nchw->ndhw", mix, torch.randn(64, 3, 16, 16, generator=g))  # correlated channels
    images = images + torch.nn.functional.avg_pool2d(images, 3, 1, 1)  # and neighbouring pixels
    filters = whitening_filters(images, eps=0.0)
    assert filters.shape == (24, 3, 2, 2) and torch.equal(filters[12:], -filters[:12])
    out = torch.nn.functional.conv2d(images, filters[:12]).permute(0, 2, 3, 1).reshape(-1, 12)
    torch.testing.assert_close(torch.cov(out.T), torch.eye(12), atol=1e-3, rtol=0)
    model = airbench94(10, 3, whitening_images=images)
    assert torch.equal(model[0].weight, whitening_filters(images))  # at its default eps
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    assert "0.weight" in buffers and "0.bias" in params
    norms = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 6 and all(f"{n}.weight" in buffers and f"{n}.bias" in params for n in norms)
    assert sum(p.numel() for p in params.values()) == pytest.approx(1.97e6, rel=0.01)  # airbench94's 1.97 M
    with pytest.raises(ValueError, match="channels"):
        airbench94(10, 1, whitening_images=images)
