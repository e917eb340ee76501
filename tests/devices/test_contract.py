"""What every bench device must do, checked through SerialDevice (``--hil-device URL`` for hardware)."""

import pytest
import torch

from devices import DeviceConfigError, Perturbation, open_device
from devices.bench import BenchDevice


@pytest.fixture
def device(contract_url):
    dev = open_device(contract_url)
    assert isinstance(dev, BenchDevice)
    yield dev
    dev.close()


def _params_inside(dev, generator, scale=0.8):
    out = []
    for spec in dev.info().layers:
        layer = {}
        for p in spec.params:
            mid, half = (p.low + p.high) / 2, (p.high - p.low) / 2
            layer[p.name] = mid + scale * half * (2 * torch.rand(p.shape, generator=generator) - 1)
        out.append(layer)
    return out


def test_handshake_describes_a_usable_network(device):
    info = device.info()
    assert info.layers and info.max_batch >= 1
    for below, above in zip(info.layers, info.layers[1:]):
        assert below.outputs == above.inputs


def test_forward_returns_every_layer_and_is_repeatable(device):
    g = torch.Generator().manual_seed(1)
    params = _params_inside(device, g)
    x = torch.rand(8, device.info().layers[0].inputs, generator=g)
    first, again = device.forward(params, x), device.forward(params, x)
    assert [tuple(a.shape) for a in first] == [(8, s.outputs) for s in device.info().layers]
    spread = max(a.abs().max().item() for a in first) + 1e-6
    for a, b in zip(first, again):
        assert (a - b).abs().max().item() <= 0.05 * spread  # read noise only


def test_perturbed_pairs_bracket_the_base_measurement(device):
    """The midpoint of +eps and -eps outputs is the base output to first order."""
    g = torch.Generator().manual_seed(2)
    params = _params_inside(device, g)
    x = torch.rand(16, device.info().layers[0].inputs, generator=g)
    acts = device.forward(params, x)
    plus, minus = device.perturbed_pairs(0, params[0], x, Perturbation((11, 12, 13), 0.01))
    assert plus.shape == minus.shape == (3, 16, device.info().layers[0].outputs)
    spread = acts[0].abs().max().item() + 1e-6
    assert ((plus + minus) / 2 - acts[0]).abs().max().item() <= 0.05 * spread
    assert (plus - minus).abs().max().item() > 0


def test_host_never_sends_out_of_bounds_parameters(device):
    params = _params_inside(device, torch.Generator().manual_seed(3))
    spec = device.info().layers[0].params[0]
    params[0][spec.name] = params[0][spec.name].clone().fill_(spec.high + 1)
    sent = device.stats.bytes_sent
    with pytest.raises(DeviceConfigError, match="outside"):
        device.forward(params, torch.zeros(2, device.info().layers[0].inputs))
    assert device.stats.bytes_sent == sent


def test_round_trips_are_counted_and_the_error_queue_is_empty(device):
    device.forward(_params_inside(device, torch.Generator().manual_seed(4)),
                   torch.zeros(2, device.info().layers[0].inputs))
    stats = device.counters.as_dict()
    # answered in time: no request timed out or was sent again (a round trip's length depends on
    # the link and on the load of the machine, so it is only required to be measured)
    assert stats["link_frames_received"] > 0 and stats["link_rtt_p99_ms"] > 0
    assert stats["link_timeouts"] == 0 and stats["link_resends"] == 0
    assert device.errors() == []


def test_a_bias_pair_moves_only_the_biases_by_eps(device):
    """A bias-only perturbation (distribution 3, or the host's fallback) equals writing bias +- eps."""
    g = torch.Generator().manual_seed(5)
    params = _params_inside(device, g, scale=0.5)
    x = torch.rand(8, device.info().layers[0].inputs, generator=g)
    spec = device.info().layers[0]
    eps = 0.25  # a whole number of cells on any fixed-point bias
    plus, minus = device.perturbed_pairs(0, params[0], x, Perturbation((0,), eps, "bias"))
    spread = device.forward(params, x)[0].abs().max().item() + 1e-6
    for sign, got in ((1, plus[0]), (-1, minus[0])):
        moved = [{**params[0], "bias": params[0]["bias"] + sign * eps}, *params[1:]]
        want = device.forward(moved, x)[0]
        assert (got - want).abs().max().item() <= 0.05 * spread  # read noise only
    assert (plus - minus).abs().max().item() > 0 and spec.has_bias
