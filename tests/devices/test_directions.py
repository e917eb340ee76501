import math

import pytest
import torch

from devices.directions import directions, words

M32 = 0xFFFFFFFF


def fmix32_scalar(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & M32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & M32
    return x ^ (x >> 16)


def word_scalar(seed: int, k: int) -> int:
    """The generator exactly as the module docstring specifies it, one element at a time."""
    return fmix32_scalar((fmix32_scalar(seed & M32) + k * 0x9E3779B9) & M32)


def test_words_match_the_scalar_specification():
    seeds = [0, 1, 0xDEADBEEF, 2**32 - 1]
    w = words(torch.tensor(seeds), 70)
    for i, s in enumerate(seeds):
        assert [int(v) for v in w[i]] == [word_scalar(s, k) for k in range(70)]


def test_rademacher_elements_are_the_bits_of_the_words():
    seed, n = 12345, 100
    v = directions([seed], 4, n // 4, "rademacher")[0].reshape(-1)
    expected = [1.0 if (word_scalar(seed, j // 32) >> (j % 32)) & 1 else -1.0 for j in range(n)]
    assert v.tolist() == expected


def test_gaussian_elements_follow_box_muller_on_word_pairs():
    seed = 777
    v = directions([seed], 1, 9, "gaussian")[0, 0]
    for j in range(9):
        u1 = (word_scalar(seed, 2 * j) + 0.5) / 2**32
        u2 = (word_scalar(seed, 2 * j + 1) + 0.5) / 2**32
        assert v[j].item() == pytest.approx(math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2), rel=1e-5)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian", "sphere"])
def test_second_moment_is_identity(distribution):
    v = directions(list(range(50)), 2000, 20, distribution).reshape(-1, 20).double()
    cov = v.T @ v / len(v)
    assert torch.allclose(cov, torch.eye(20, dtype=torch.float64), atol=0.02)
    assert abs(v.mean().item()) < 0.01


def test_sphere_rows_have_norm_sqrt_n():
    v = directions([3, 4], 5, 16, "sphere")
    assert torch.allclose(v.norm(dim=-1), torch.full((2, 5), 4.0))


def test_seeds_give_independent_directions():
    v = directions([1, 2], 1, 4096, "rademacher")[:, 0]
    assert abs((v[0] * v[1]).mean().item()) < 0.05


def test_unknown_distribution_is_refused():
    with pytest.raises(ValueError, match="rademacher"):
        directions([1], 1, 4, "uniform")  # type: ignore[arg-type]
