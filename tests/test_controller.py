import pytest
import torch

from functional_ast import controller as ctl
from functional_ast import gate as gt
from functional_ast import random, strategies
from functional_ast.config import ConfigError
from conftest import significance_sample


def _run_loop(target, kind, start, steps=500, batch=128, seed=0, calibrate=False):
    """Gate + controller closed loop on synthetic significance; returns per-step rates and states."""
    cfg = ctl.ControllerConfig(target_rate=target, initial_threshold=None if calibrate else start)
    gcfg = strategies.default_gate(target)
    g = torch.Generator().manual_seed(seed)
    cs, gs, key, rates, states = ctl.init(cfg), gt.init(gcfg), random.key(seed), [], []
    for _ in range(steps):
        key, k = random.split(key)
        s = significance_sample(kind, batch, g)
        if calibrate:
            cs = ctl.calibrate(cs, gt.threshold_for_rate(s, target, gcfg.temperature, cfg.threshold_min,
                                                         cfg.threshold_max))
        mask, gs, _ = gt.gate(s, cs["threshold"], gs, k, gcfg)
        rate = mask.float().mean()
        cs = ctl.update(cs, rate, cfg)
        rates.append(float(rate))
        states.append(cs)
    return torch.tensor(rates), states, cfg


@pytest.mark.parametrize("target", [0.05, 0.1, 0.25, 0.5])
@pytest.mark.parametrize("start", [0.0, 1.5])
def test_converges_to_target_from_either_bound(target, start):
    rates, states, cfg = _run_loop(target, "lognormal", start, steps=800)
    assert rates[-200:].mean() == pytest.approx(target, abs=max(0.01, 0.1 * target))
    for s in states:
        assert cfg.threshold_min <= float(s["threshold"]) <= cfg.threshold_max
        assert abs(float(s["integral"])) <= cfg.integral_limit


@pytest.mark.parametrize("kind", ["heavy", "uniform", "constant"])
def test_converges_for_other_score_distributions(kind):
    rates, _, _ = _run_loop(0.2, kind, 0.5, steps=400, seed=1)
    assert rates[-150:].mean() == pytest.approx(0.2, abs=0.02)


def test_calibration_starts_on_target():
    rates, states, _ = _run_loop(0.2, "lognormal", None, steps=40, calibrate=True)
    assert rates[:40].mean() == pytest.approx(0.2, abs=0.04)  # no long transient
    assert bool(states[0]["calibrated"])


def test_calibrate_only_once():
    state = ctl.init(ctl.ControllerConfig())
    once = ctl.calibrate(state, torch.tensor(0.9))
    twice = ctl.calibrate(once, torch.tensor(0.1))
    assert float(once["base"]) == pytest.approx(0.9) and float(twice["base"]) == pytest.approx(0.9)


def test_anti_windup_after_saturation():
    cfg = ctl.ControllerConfig(target_rate=0.1, initial_threshold=0.5)
    state = ctl.init(cfg)
    for _ in range(2000):  # an unreachable demand: every sample activates whatever the threshold
        state = ctl.update(state, torch.tensor(1.0), cfg)
        assert abs(float(state["integral"])) <= cfg.integral_limit
    assert float(state["threshold"]) > cfg.threshold_max - 0.05  # held at (just under) the bound
    # Without anti-windup the integral would sit at its clamp (50); it stays near what the bound needs.
    assert abs(float(state["integral"])) < 5
    # Once the demand is met the threshold must come off the bound within a few EMA time constants.
    steps = 0
    while float(state["threshold"]) > 1.0 and steps < 100:
        state = ctl.update(state, torch.tensor(0.0), cfg)
        steps += 1
    assert steps < 30


def test_update_is_pure():
    cfg = ctl.ControllerConfig()
    state = ctl.init(cfg)
    copy = state.clone()
    a = ctl.update(state, torch.tensor(0.3), cfg)
    b = ctl.update(state, torch.tensor(0.3), cfg)
    assert (state == copy).all()
    assert (a == b).all()


@pytest.mark.parametrize("field,value", [("target_rate", 0.0), ("target_rate", 1.5), ("ema_alpha", 0.0),
                                         ("kp", -1.0), ("integral_decay", 2.0), ("initial_threshold", 9.0)])
def test_bad_config_is_named(field, value):
    with pytest.raises(ConfigError, match=field):
        ctl.ControllerConfig(**{field: value})
