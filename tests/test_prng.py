import torch

from functional_ast.core import prng


def test_same_key_same_numbers_and_no_global_state():
    k = prng.key(123)
    torch.manual_seed(0)
    a = prng.uniform(k, 1000)
    torch.manual_seed(99)
    b = prng.uniform(k, 1000)
    assert torch.equal(a, b)


def test_split_gives_distinct_independent_keys():
    k = prng.key(7)
    k1, k2 = prng.split(k)
    assert k1 != k2 and k1 != k
    u1, u2 = prng.uniform(k1, 4000), prng.uniform(k2, 4000)
    assert not torch.equal(u1, u2)
    assert abs(torch.corrcoef(torch.stack([u1, u2]))[0, 1]) < 0.05


def test_uniform_is_uniform():
    u = prng.uniform(prng.key(1), 100_000)
    assert u.min() >= 0 and u.max() < 1
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert torch.allclose(hist, torch.full_like(hist, 0.1), atol=0.01)
    v = prng.uniform(prng.key(1), 1000, 2.0, 4.0)
    assert v.min() >= 2 and v.max() < 4


def test_bits_stay_in_32_bits_for_extreme_keys():
    for seed in (0, 1, 2**32 - 1, 2**31):
        b = prng.bits(prng.key(seed), 5000)
        assert b.min() >= 0 and b.max() < 2**32
        assert b.unique().numel() > 4990  # a bijection in the counter: no collisions
