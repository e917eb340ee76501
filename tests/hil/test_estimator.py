import math

import pytest
import torch

from devices.directions import directions
from hil.estimator import (
    chunk_losses,
    combine,
    estimate_layer,
    estimate_projection,
    exact_projection_grad,
    goodness_loss,
    series_order,
)
from hil.goodness import PrototypeObjective, SoftmaxObjective, simplex_prototypes
from simulators import CrossbarOptions, SimulatedCrossbar


def _quadratic(k: int, n: int, seed: int = 0):
    """K independent quadratics f_k(w) = 0.5 (w - c_k)^T A_k (w - c_k); returns f, w, true grads."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(k, n, n, generator=gen, dtype=torch.float64)
    a = q @ q.transpose(1, 2) / n + torch.eye(n, dtype=torch.float64)
    c = torch.randn(k, n, generator=gen, dtype=torch.float64)
    w = torch.randn(k, n, generator=gen, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:  # x: (..., K, n) -> (..., K)
        d = x - c
        return 0.5 * torch.einsum("...kn,knm,...km->...k", d, a, d)

    grad = torch.einsum("knm,km->kn", a, w - c)
    return f, w, grad


def _dd(f, w, v, eps=1e-3):
    return (f(w + eps * v) - f(w - eps * v)) / (2 * eps)


@pytest.mark.parametrize("distribution", ["gaussian", "sphere", "rademacher"])
def test_single_direction_cosine_matches_theory(distribution):
    k, n = 10_000, 50
    f, w, grad = _quadratic(k, n)
    v = directions([2024], k, n, distribution, dtype=torch.float64)
    est = combine(_dd(f, w, v), v, "mean")
    cos = torch.nn.functional.cosine_similarity(est, grad, dim=-1)
    assert (cos >= -1e-12).all()  # a DD estimate never points away from the gradient
    theory = math.sqrt(2 / (math.pi * n))
    assert cos.mean().item() == pytest.approx(theory, rel=0.04)


def test_mean_is_unbiased():
    k, n, p = 2000, 10, 64
    f, w, grad = _quadratic(k, n, seed=1)
    v = directions(list(range(p)), k, n, "rademacher", dtype=torch.float64)
    est = combine(_dd(f, w, v), v, "mean")
    rel = (est - grad).norm() / grad.norm()
    # variance of the mean over P Rademacher directions: (||g||^2 - sum g_i^2)/P per chunk
    assert rel.item() < 2.0 * math.sqrt(n / p)
    assert torch.nn.functional.cosine_similarity(est.flatten(), grad.flatten(), dim=0) > 0.9


@pytest.mark.parametrize("p", [8, 12])
def test_projection_is_exact_once_directions_span_the_chunk(p):
    k, n = 50, 8
    f, w, grad = _quadratic(k, n, seed=2)
    v = directions(list(range(100, 100 + p)), k, n, "gaussian", dtype=torch.float64)
    est = combine(_dd(f, w, v), v, "projection")
    assert torch.allclose(est, grad, rtol=1e-6, atol=1e-8)


def test_projection_with_few_directions_is_the_projection_of_the_gradient():
    k, n, p = 20, 30, 4
    f, w, grad = _quadratic(k, n, seed=3)
    v = directions(list(range(p)), k, n, "gaussian", dtype=torch.float64)
    est = combine(_dd(f, w, v), v, "projection")
    # the residual is orthogonal to every direction
    residual = grad - est
    assert torch.einsum("kn,pkn->pk", residual, v).abs().max() < 1e-6


def test_projection_beats_the_mean_on_correlated_directions():
    """Directions sharing a common component: the mean over-counts it, the projection does not."""
    k, n, p = 400, 40, 4
    f, w, grad = _quadratic(k, n, seed=4)
    gen = torch.Generator().manual_seed(5)
    shared = torch.randn(1, k, n, generator=gen, dtype=torch.float64)
    v = shared + 0.3 * torch.randn(p, k, n, generator=gen, dtype=torch.float64)
    dd = _dd(f, w, v)
    cosine = {how: torch.nn.functional.cosine_similarity(combine(dd, v, how), grad, dim=-1)
              for how in ("mean", "projection")}
    assert bool((cosine["projection"] >= cosine["mean"] - 1e-9).all())
    assert cosine["projection"].mean() > cosine["mean"].mean() + 0.1
    independent = torch.randn(p, k, n, generator=gen, dtype=torch.float64)
    dd = _dd(f, w, independent)
    gap = (torch.nn.functional.cosine_similarity(combine(dd, independent, "projection"), grad, dim=-1)
           - torch.nn.functional.cosine_similarity(combine(dd, independent, "mean"), grad, dim=-1)).mean()
    assert 0 <= gap < 0.1  # near-orthogonal directions: the gain is small, as published


def _layer_setup(widths=(6, 5, 4), seed=0):
    device = SimulatedCrossbar(CrossbarOptions(layers=list(widths), activation="tanh"))
    gen = torch.Generator().manual_seed(seed)
    params = [{p.name: (torch.rand(p.shape, generator=gen) - 0.5) for p in s.params}
              for s in device.info().layers]
    x = torch.rand(16, widths[0], generator=gen)
    y = torch.randint(0, 3, (16,), generator=gen)
    m = torch.randn(3, widths[-1], generator=gen)
    return device, params, x, y, m


OBJECTIVES = {
    "softmax": SoftmaxObjective,
    "prototype": lambda m: PrototypeObjective(simplex_prototypes(*m.shape, torch.Generator().manual_seed(9)), 0.3),
}


@pytest.mark.parametrize("goodness", OBJECTIVES)
def test_splicing_equals_perturbing_chunks_one_at_a_time(goodness):
    device, params, x, y, m = _layer_setup()
    m = OBJECTIVES[goodness](m)
    spec = device.info().layers[1]
    h = device.forward(params, x)
    seeds = (11, 12, 13)
    before = device.counters.queries
    spliced = estimate_layer(device, 1, spec, params[1], h[0], h[1], m, y, seeds, 1e-2)
    spliced_cost = device.counters.queries - before
    before = device.counters.queries
    one_by_one = estimate_layer(device, 1, spec, params[1], h[0], h[1], m, y, seeds, 1e-2, splice=False)
    sequential_cost = device.counters.queries - before
    for name in spliced:
        assert torch.allclose(spliced[name], one_by_one[name], rtol=1e-3, atol=1e-5)
    assert spliced_cost == 2 * len(seeds)
    assert sequential_cost == 2 * len(seeds) * spec.outputs


@pytest.mark.parametrize("goodness", OBJECTIVES)
def test_layer_estimate_with_spanning_directions_matches_autograd(goodness):
    device, params, x, y, m = _layer_setup(widths=(6, 5, 4))
    m = OBJECTIVES[goodness](m)
    spec = device.info().layers[1]
    h = device.forward(params, x)
    leaf = {k: v.clone().requires_grad_() for k, v in params[1].items()}
    loss = m.loss(device.differentiable_layer(1, leaf, h[0]), y)
    loss.backward()
    # twice as many directions as a chunk has parameters keeps the Gram system well conditioned
    seeds = tuple(range(40, 40 + 2 * spec.chunk_size()))
    est = estimate_layer(device, 1, spec, params[1], h[0], h[1], m, y, seeds, 3e-3,
                         distribution="gaussian", how="projection")
    for name in est:
        assert (est[name] - leaf[name].grad).abs().max() < 1e-4  # gradients are ~0.1


def test_projection_dd_matches_the_closed_form():
    gen = torch.Generator().manual_seed(5)
    act = torch.rand(32, 6, generator=gen, dtype=torch.float64)
    m = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (32,), generator=gen)
    exact = exact_projection_grad(act, m, y)
    leaf = m.clone().requires_grad_()
    goodness_loss(act @ leaf.T, y).backward()
    assert torch.allclose(exact, leaf.grad)
    est = estimate_projection(act.float(), m.float(), y, tuple(range(6)), 1e-2, "gaussian", "projection")
    assert torch.allclose(est.double(), exact, rtol=1e-2, atol=1e-4)


def test_chunk_losses_by_series_equal_the_float64_sum_of_exponentials():
    gen = torch.Generator().manual_seed(4)
    g = torch.randn(64, 10, generator=gen) * 3
    w = torch.randn(10, 200, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    orders = []
    for reach in (1e-4, 0.03, 0.3, 1.0, 2.0):
        shift = torch.rand(6, 64, 200, generator=gen) * 2 - 1
        shift *= reach / (shift.abs().amax() * w.abs().amax())
        orders.append(series_order(reach))
        got = chunk_losses(g, shift, w, y).double()
        want = torch.logsumexp(g.double().T[:, None, :, None] + w.double()[:, None, None, :] * shift.double(), 0)
        want = want.mean(1) - (g.double().gather(1, y[:, None]).mean() + (shift.double() * w.double()[y]).mean(1))
        assert (got - want).abs().max() < 2e-6, reach
    assert orders[0] < orders[2] < orders[-1] <= 16  # the series grows with the reach
    assert series_order(3.0) is None


def test_chunk_losses_equal_cross_entropy_of_the_shifted_goodness_even_when_huge():
    gen = torch.Generator().manual_seed(9)
    g = torch.randn(5, 4, generator=gen)
    w = torch.randn(4, 3, generator=gen)
    y = torch.randint(0, 4, (5,), generator=gen)
    for scale in (0.1, 500.0):  # the second overflows the fast path and takes the stable one
        shift = torch.randn(2, 5, 3, generator=gen) * scale
        got = chunk_losses(g, shift, w, y)
        want = torch.stack([torch.stack([goodness_loss(g + shift[s, :, k, None] * w[:, k], y)
                                         for k in range(3)]) for s in range(2)])
        assert torch.isfinite(got).all()
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
