import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from devices import Perturbation, open_device
from devices.directions import directions
from hil.estimator import (
    bias_travel,
    chunk_losses,
    combine,
    estimate_activity,
    estimate_layer,
    estimate_projection,
    exact_projection_grad,
    goodness_loss,
    series_order,
)
from hil.goodness import PrototypeObjective, SoftmaxObjective, simplex_prototypes
from hil.model import MonoForward
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


# ----------------------------------------------------------------- activity space


def _activity_setup(activation: str, conv: str = "", goodness: str = "softmax", seed: int = 0):
    """A device and model whose pre-activations sit at least 0.3 from every kink.

    Biases of +-0.5 with small weights keep every relu unit on one side of 0 and every hardtanh
    unit inside (-1, 1), so a finite difference is exact up to O(eps^2) there; and each pooling
    window shares one slope, where the per-window conv estimate is exact. A prototype margin of
    2.5 exceeds any gap of two cosines, so every hinge is active: the loss has no kink either.
    """
    url_conv = f"&conv={conv}" if conv else ""
    device = open_device(f"sim://crossbar?layers=16,6,5&activation={activation}{url_conv}")
    info = device.info()
    model = MonoForward.initialise(info, 4, seed, features=3, goodness=goodness, margin=2.5)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.params:
            layer["weight"].uniform_(-0.1, 0.1, generator=gen)
            sign = torch.randint(0, 2, layer["bias"].shape, generator=gen) * 2 - 1
            layer["bias"].copy_(0.5 * sign)
    x = torch.rand(24, 16, generator=gen)
    y = torch.randint(0, 4, (24,), generator=gen)
    return device, model, x, y


def _autograd_local(device, model, layer, x, y):
    leaf = {k: v.detach().clone().requires_grad_() for k, v in model.params[layer].items()}
    model.layer_loss(layer, device.differentiable_layer(layer, leaf, x), y).backward()
    return {k: v.grad for k, v in leaf.items()}


def _activity(device, model, layer, inputs, acts, y, eps):
    spec = device.info().layers[layer]
    with torch.no_grad():
        return estimate_activity(device, layer, spec, model.device_params()[layer], inputs[layer], acts[layer],
                                 model.objective(layer), y, eps, partial(model.features, layer),
                                 model.readout(layer))


EXACT_CASES = [(activation, conv, goodness) for activation in ("relu", "tanh", "hardtanh")
               for conv in ("", "3c3", "3c3p2,4c3") for goodness in ("softmax", "prototype")
               # tanh's slope varies across a pooling window: see the approximation test below
               if not (activation == "tanh" and "p2" in conv)]


@pytest.mark.parametrize("activation, conv, goodness", EXACT_CASES)
def test_activity_estimate_equals_autograd_of_the_local_loss(activation, conv, goodness):
    device, model, x, y = _activity_setup(activation, conv, goodness)
    acts = device.forward(model.device_params(), x)
    inputs = [x, *acts[:-1]]
    for layer in range(len(acts)):
        est = _activity(device, model, layer, inputs, acts, y, 1e-3)
        want = _autograd_local(device, model, layer, inputs[layer], y)
        for name in ("weight", "bias"):
            err = (est[name] - want[name]).norm() / want[name].norm()
            assert err < 1e-3, (layer, name, err.item())


def test_a_pooled_conv_estimate_is_close_where_slopes_vary_in_a_window():
    """Per-window derivatives on each window's mean patch: not exact, still close (see README)."""
    device = open_device("sim://crossbar?layers=64,6&conv=4c3p2&activation=tanh")
    model = MonoForward.initialise(device.info(), 4, 0, features=3)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.rand(64, 64, generator=gen), torch.randint(0, 4, (64,), generator=gen)
    acts = device.forward(model.device_params(), x)
    est = _activity(device, model, 0, [x], acts, y, 1e-2)
    want = _autograd_local(device, model, 0, x, y)
    assert F.cosine_similarity(est["weight"].flatten(), want["weight"].flatten(), dim=0) > 0.98
    assert (est["bias"] - want["bias"]).norm() / want["bias"].norm() < 1e-3  # a channel's bias sums its windows


@pytest.mark.parametrize("goodness", ["softmax", "prototype"])
@pytest.mark.parametrize("conv", ["", "3c3p2"], ids=["MLP", "CNN"])
def test_per_sample_splicing_equals_perturbing_one_bias_at_a_time(goodness, conv):
    """Each sample's spliced loss change equals the change with only that chunk's bias moved.

    A dense chunk is one output, so the two are the same number; a conv chunk (a channel) owns a
    pooled map, whose outputs' spliced changes add up to the channel's to second order.
    """
    device, model, x, y = _activity_setup("tanh", conv, goodness)
    acts = device.forward(model.device_params(), x)
    spec, params = device.info().layers[0], model.device_params()[0]
    objective = _float64(model.objective(0))
    base = model.features(0, acts[0]).double()
    base_losses = _per_sample_loss(objective, base, y)
    plus, minus = device.perturbed_pairs(0, params, x, Perturbation((0,), 1e-2, "bias"))
    with torch.no_grad():
        changes = model.objective(0).unit_changes(model.features(0, acts[0]), torch.cat([plus, minus]) - acts[0],
                                                  model.readout(0), y).double()
    per_chunk = changes.reshape(2, len(y), spec.n_chunks(), spec.chunk_outputs()).sum(-1)
    tolerance = 1e-7 if spec.chunk_outputs() == 1 else 1e-4  # changes are ~1e-3
    for k in range(spec.n_chunks()):
        one = device.perturbed_pairs(0, params, x, Perturbation((0,), 1e-2, "bias", chunk=k))
        for sign in (0, 1):
            alone = _per_sample_loss(objective, model.features(0, one[sign][0]).double(), y) - base_losses
            assert (per_chunk[sign, :, k] - alone).abs().max() < tolerance


def _float64(objective):
    if isinstance(objective, SoftmaxObjective):
        return SoftmaxObjective(objective.projection.detach().double())
    return PrototypeObjective(objective.prototypes.double(), objective.margin)


def _per_sample_loss(objective, feat, y):
    goodness = objective.goodness(feat)
    if isinstance(objective, SoftmaxObjective):
        return F.cross_entropy(goodness, y, reduction="none")
    return objective._hinge(goodness, y)


def test_a_bias_at_its_bound_is_measured_one_sided_and_never_sent_outside():
    device, model, x, y = _activity_setup("tanh")
    with torch.no_grad():
        model.params[0]["bias"][:3] = torch.tensor([1.0, -1.0, 0.995])
    spec, params = device.info().layers[0], model.device_params()[0]
    assert bias_travel(spec, params, 1e-2)[:4].tolist() == pytest.approx([1e-2, 1e-2, 1.5e-2, 2e-2])
    acts = device.forward(model.device_params(), x)
    est = _activity(device, model, 0, [x], acts, y, 1e-2)
    want = _autograd_local(device, model, 0, x, y)
    for name in ("weight", "bias"):
        assert (est[name] - want[name]).norm() / want[name].norm() < 2e-2  # one-sided: O(eps)
