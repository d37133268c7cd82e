import pytest
import torch
from conftest import assert_tree_equal, significance_sample

from functional_ast.core import gate as gt
from functional_ast.core import prng
from functional_ast.train.config import ConfigError


def test_never_empty_even_when_nothing_passes():
    cfg = gt.GateConfig(min_selected=3)
    scores = torch.linspace(0, 0.2, 64)
    mask, state, info = gt.gate(scores, torch.tensor(10.0), gt.init(cfg), prng.key(0), cfg)
    assert mask.sum() == 3 and int(info["n_fallback"]) == 3
    assert mask[-3:].all()  # the fallback takes the top scores


def test_low_temperature_is_a_hard_threshold():
    cfg = gt.GateConfig(temperature=1e-4, regen_low=100, regen_high=100, min_selected=1)
    scores = torch.rand(200, generator=torch.Generator().manual_seed(0))
    mask, _, _ = gt.gate(scores, torch.tensor(0.7), gt.init(cfg), prng.key(3), cfg)
    assert torch.equal(mask, scores > 0.7)


def test_activation_budget_caps_activations_and_drains():
    cfg = gt.GateConfig(capacity=50, activation_cost=10, regen_low=0, regen_high=0, min_selected=1)
    scores = torch.ones(100)  # every sample is a candidate at threshold 0 with low temperature
    state = gt.init(cfg)
    mask, state, info = gt.gate(scores, torch.tensor(-5.0), state, prng.key(0), cfg)
    assert mask.sum() == 5 and int(info["n_blocked"]) == 95  # 50 budget / 10 per activation
    assert float(state["budget"]) == 0.0
    mask, state, info = gt.gate(scores, torch.tensor(-5.0), state, prng.key(1), cfg)
    assert mask.sum() == 1 and int(info["n_fallback"]) == 1  # empty budget: only the fallback


def test_budget_regenerates_per_sample():
    cfg = gt.GateConfig(capacity=1000, activation_cost=10, regen_low=2, regen_high=2, min_selected=1)
    state = gt.TensorDict(budget=torch.tensor(0.0))
    mask, new, info = gt.gate(torch.ones(50), torch.tensor(-5.0), state, prng.key(0), cfg)
    assert mask.sum() == 10  # 50 samples * 2 regen / 10 per activation
    assert float(new["budget"]) == 0.0


def test_respects_budget_over_many_steps():
    cfg = gt.GateConfig()  # sustainable rate 20%
    g = torch.Generator().manual_seed(0)
    state, key, gated, seen = gt.init(cfg), prng.key(0), 0, 0
    for _ in range(200):
        key, k = prng.split(key)
        mask, state, info = gt.gate(significance_sample("lognormal", 128, g), torch.tensor(0.0), state, k, cfg)
        gated += int(mask.sum() - info["n_fallback"])
        seen += 128
        assert 0 <= float(state["budget"]) <= cfg.capacity
    assert gated <= cfg.capacity / cfg.activation_cost + seen * cfg.regen_high / cfg.activation_cost
    assert gated / seen == pytest.approx(cfg.sustainable_rate, abs=0.02)


def test_pure_and_deterministic():
    cfg = gt.GateConfig()
    scores = torch.rand(64, generator=torch.Generator().manual_seed(1))
    state = gt.init(cfg)
    before = (scores.clone(), state.clone())
    a = gt.gate(scores, torch.tensor(0.5), state, prng.key(5), cfg)
    b = gt.gate(scores, torch.tensor(0.5), state, prng.key(5), cfg)
    c = gt.gate(scores, torch.tensor(0.5), state, prng.key(6), cfg)
    assert torch.equal(scores, before[0])
    assert_tree_equal(state, before[1])
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_threshold_for_rate_hits_expected_rate():
    scores = significance_sample("lognormal", 512, torch.Generator().manual_seed(0))
    for target in (0.05, 0.2, 0.5):
        thr = gt.threshold_for_rate(scores, target, 0.1, 0.0, 1.5)
        rate = gt.expected_rate(scores, thr.view(1), 0.1)
        assert float(rate) == pytest.approx(target, abs=0.01)


def test_bad_config_is_named():
    with pytest.raises(ConfigError, match="temperature"):
        gt.GateConfig(temperature=0)
    with pytest.raises(ConfigError, match="min_selected"):
        gt.GateConfig(min_selected=0)
