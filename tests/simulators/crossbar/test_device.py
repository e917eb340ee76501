import pytest
import torch

from devices import DeviceURLError, Perturbation, open_device
from simulators import CrossbarOptions, SimulatedCrossbar


def _params(device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [{p.name: torch.rand(p.shape, generator=gen) - 0.5 for p in spec.params}
            for spec in device.info().layers]


def test_forward_is_the_ideal_mlp():
    device = SimulatedCrossbar(CrossbarOptions(layers=[6, 5, 4]))
    params = _params(device)
    x = torch.rand(9, 6)
    h = torch.relu(x @ params[0]["weight"].T / 6**0.5 + params[0]["bias"])
    out = torch.relu(h @ params[1]["weight"].T / 5**0.5 + params[1]["bias"])
    acts = device.forward(params, x)
    assert torch.allclose(acts[0], h, atol=1e-6) and torch.allclose(acts[1], out, atol=1e-6)


def test_perturbed_pairs_equal_forwards_at_shifted_parameters():
    device = SimulatedCrossbar(CrossbarOptions(layers=[6, 5], activation="tanh"))
    params = _params(device)
    x = torch.rand(9, 6)
    pert = Perturbation((1, 2), 0.01, "gaussian")
    plus, minus = device.perturbed_pairs(0, params[0], x, pert)
    v = pert.vectors(device.info().layers[0])
    for p in range(2):
        for sign, got in ((1, plus[p]), (-1, minus[p])):
            w = params[0]["weight"] + sign * 0.01 * v[p, :, :6]
            b = params[0]["bias"] + sign * 0.01 * v[p, :, 6]
            assert torch.allclose(got, torch.tanh(x @ w.T / 6**0.5 + b), atol=1e-6)


def test_pairs_after_a_forward_reuse_its_column_sums_only_while_rows_and_weights_are_unchanged():
    device, fresh = (SimulatedCrossbar(CrossbarOptions(layers=[6, 5, 4])) for _ in range(2))
    params = _params(device)
    x = torch.rand(9, 6)
    pert = Perturbation((3, 4), 0.01)
    acts = device.forward(params, x)
    for layer, rows in ((0, x), (1, acts[0])):
        got = device.perturbed_pairs(layer, params[layer], rows, pert)
        want = fresh.perturbed_pairs(layer, params[layer], rows.clone(), pert)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    for change in (lambda: params[0]["weight"].add_(0.1), lambda: x.mul_(0.5)):  # a step; an input edited
        device.forward(params, x)
        change()
        got = device.perturbed_pairs(0, params[0], x, pert)
        want = fresh.perturbed_pairs(0, params[0], x.clone(), pert)
        assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_parameters_changed_in_place_are_programmed_again():
    device = SimulatedCrossbar(CrossbarOptions(layers=[6, 5]))
    params = _params(device)
    x = torch.rand(9, 6)
    before = device.forward(params, x)[0]
    device.forward(params, x)  # the same tensors, unchanged: nothing to write
    assert device.counters.param_writes == 1
    with torch.no_grad():
        params[0]["weight"].mul_(-1)  # the same tensor objects, new values
        params[0]["bias"].add_(0.1)
    after = device.forward(params, x)[0]
    assert device.counters.param_writes == 2
    expected = torch.relu(x @ params[0]["weight"].T / 6**0.5 + params[0]["bias"])
    assert torch.allclose(after, expected, atol=1e-6) and not torch.equal(after, before)


def test_counters_count_queries_and_writes():
    device = SimulatedCrossbar(CrossbarOptions(layers=[4, 3, 2]))
    params = _params(device)
    device.forward(params, torch.rand(2, 4))
    device.perturbed_pairs(1, params[1], torch.rand(2, 3), Perturbation((1, 2, 3), 0.1))
    c = device.counters
    assert (c.queries, c.forwards, c.perturbation_batches, c.param_writes) == (2 + 6, 1, 1, 2 + 6)


@pytest.mark.parametrize("url, match", [
    ("sim://crossbar?layers=4", "at least two"),
    ("sim://crossbar?activation=sigmoid", "activation"),
    ("sim://crossbar?colour=red", "colour"),
    ("sim://optics", "crossbar"),
])
def test_bad_urls_say_what_is_wrong(url, match):
    with pytest.raises(DeviceURLError, match=match):
        open_device(url)


def test_a_bias_pair_moves_the_digital_bias_and_writes_nothing():
    """The bias sits in the periphery: a bias pair reads the array as programmed, each query its own read."""
    for preset in ("ideal", "pcm"):
        device = open_device(f"sim://crossbar?layers=8,4&preset={preset}&seed=1")
        gen = torch.Generator().manual_seed(0)
        params = [{"weight": torch.rand(4, 8, generator=gen) - 0.5, "bias": torch.tensor([0.1, -0.2, 0.3, 1.0])}]
        x = torch.rand(5, 8, generator=gen)
        base = device.forward(params, x)[0]
        writes, cells = device.counters.param_writes, device.counters.as_dict()["writes_per_cell"]
        plus, minus = device.perturbed_pairs(0, params[0], x, Perturbation((0,), 0.05, "bias"))
        assert device.counters.param_writes == writes and device.counters.as_dict()["writes_per_cell"] == cells
        assert device.counters.queries == 1 + 2
        if preset == "ideal":  # exact: the bias at +0.05, the one at its bound clipped to 1.0
            up = params[0]["bias"].add(0.05).clamp(max=1.0) - params[0]["bias"]
            moved = device.forward([{**params[0], "bias": params[0]["bias"] + up}], x)[0]
            assert torch.equal(plus[0], moved)
            assert torch.equal(device.perturbed_pairs(0, params[0], x, Perturbation((0,), 0.0))[0][0], base)
        else:  # read noise differs query to query, the programmed array does not
            assert 0 < (plus[0] - minus[0]).abs().mean() < 0.5
