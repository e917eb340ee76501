"""Conv layers on the simulated crossbar: patch reads equal torch's convolution, and estimates splice."""

import pytest
import torch
import torch.nn.functional as F

from devices.errors import DeviceURLError
from devices.interface import Perturbation, split_chunks
from hil.estimator import estimate_layer
from hil.model import MonoForward
from simulators.registry import open_sim


def _params(device, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [{p.name: (torch.rand(p.shape, generator=gen) * 2 - 1) * scale for p in s.params}
            for s in device.info().layers]


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_ideal_conv_forward_equals_torch_conv2d_then_pooling(pooling):
    device = open_sim(f"sim://crossbar?layers=108,10&conv=4c3p2,5c5&image=3x6x6&pooling={pooling}&activation=tanh")
    conv0, conv1, dense = device.info().layers
    assert (conv0.kind, conv0.inputs, conv0.outputs, conv0.n_chunks(), conv0.chunk_size()) == ("conv", 108, 36, 4, 28)
    assert (conv1.inputs, conv1.outputs, conv1.params[0].shape) == (36, 45, (5, 100))
    assert (dense.kind, dense.inputs) == ("dense", 45)
    params = _params(device)
    x = torch.rand(7, 108, generator=torch.Generator().manual_seed(1)) * 2 - 1
    acts = device.forward(params, x)
    pool = F.avg_pool2d if pooling == "avg" else F.max_pool2d
    h = x.reshape(7, 3, 6, 6)
    w0 = params[0]["weight"].reshape(4, 3, 3, 3)
    h = pool(torch.tanh(F.conv2d(h, w0, padding=1) / 27**0.5 + params[0]["bias"][:, None, None]), 2)
    torch.testing.assert_close(acts[0], h.reshape(7, -1), rtol=1e-5, atol=1e-6)
    w1 = params[1]["weight"].reshape(5, 4, 5, 5)
    h = torch.tanh(F.conv2d(h, w1, padding=2) / 100**0.5 + params[1]["bias"][:, None, None])
    torch.testing.assert_close(acts[1], h.reshape(7, -1), rtol=1e-5, atol=1e-6)
    # the autograd baselines' path computes the same
    torch.testing.assert_close(device.differentiable_layer(1, params[1], acts[0]), acts[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("preset", ["ideal", "pcm"])
def test_conv_perturbation_pairs_equal_single_reads_of_the_perturbed_weights(preset):
    url = f"sim://crossbar?preset={preset}&layers=64,8&conv=3c3p2&seed=4"
    device, twin = open_sim(url), open_sim(url)
    spec = device.info().layers[0]
    params = _params(device, scale=0.8)
    x = torch.rand(5, 64, generator=torch.Generator().manual_seed(2))
    pert = Perturbation((7, 8), 0.05)
    plus, minus = device.perturbed_pairs(0, params[0], x, pert)
    assert plus.shape == (2, 5, spec.outputs)
    if preset == "ideal":  # exact writes: the pair is the layer read at the perturbed weights
        v = split_chunks(spec, pert.vectors(spec))
        for p in range(2):
            shifted = {k: params[0][k] + 0.05 * v[k][p] for k in params[0]}
            torch.testing.assert_close(plus[p], twin.forward_layer(0, shifted, x), rtol=1e-5, atol=1e-6)
    else:  # noisy writes and reads: the same seed reproduces the pair bit for bit
        again = twin.perturbed_pairs(0, params[0], x, pert)
        assert torch.equal(plus, again[0]) and torch.equal(minus, again[1])
        assert not torch.equal(plus[0], minus[0])


@pytest.mark.parametrize("goodness", ["softmax", "prototype"])
def test_conv_chunks_are_output_channels_and_splicing_equals_one_at_a_time(goodness):
    device = open_sim("sim://crossbar?layers=64,6&conv=4c3,3c3p2&activation=tanh")
    info = device.info()
    model = MonoForward.initialise(info, classes=3, seed=0, features=5, goodness=goodness)
    assert model.feature_maps[0].shape == (64, 5) and model.feature_maps[1].shape == (16, 5)
    assert model.projections[1].shape == (3, 3 * 5) and model.feature_maps[2] is None
    params = model.device_params()
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(12, 64, generator=gen)
    y = torch.randint(0, 3, (12,), generator=gen)
    acts = device.forward(params, x)
    spec = info.layers[1]
    m = model.objective(1)
    features = lambda a: model.features(1, a)  # noqa: E731
    seeds = (21, 22, 23)
    before = device.counters.queries
    spliced = estimate_layer(device, 1, spec, params[1], acts[0], acts[1], m, y, seeds, 1e-2, features=features)
    assert device.counters.queries - before == 2 * len(seeds)
    one_by_one = estimate_layer(device, 1, spec, params[1], acts[0], acts[1], m, y, seeds, 1e-2,
                                splice=False, features=features)
    assert device.counters.queries - before == 2 * len(seeds) * (1 + spec.n_chunks())
    for name in spliced:
        torch.testing.assert_close(spliced[name], one_by_one[name], rtol=1e-3, atol=1e-5)
    # and the estimate points along autograd's gradient of the same local loss
    leaf = {k: v.clone().requires_grad_() for k, v in params[1].items()}
    model.layer_loss(1, device.differentiable_layer(1, leaf, acts[0]), y).backward()
    many = tuple(range(100, 100 + 4 * spec.chunk_size()))
    est = estimate_layer(device, 1, spec, params[1], acts[0], acts[1], m, y, many, 1e-3,
                         distribution="gaussian", how="projection", features=features)
    cosine = F.cosine_similarity(est["weight"].flatten(), leaf["weight"].grad.flatten(), dim=0)
    assert cosine > 0.99


@pytest.mark.parametrize("query, message", [
    ("layers=64,8&conv=4x3", "CHANNELScKERNEL"),
    ("layers=64,8&conv=4c2", "odd"),
    ("layers=64,8&conv=4c3p3", "does not divide"),
    ("layers=144,8&conv=4c3p2,8c3p2,6c3p2", r"'6c3p2' \(layer 3, on a 3x3 map\): pool 2 .* or none \(6c3\)"),
    ("layers=64,8&conv=4c3&image=2x4x4", "holds 32 values"),
    ("layers=60,8&conv=4c3", "image=CxHxW"),
])
def test_bad_conv_options_say_what_to_write(query, message):
    with pytest.raises(DeviceURLError, match=message):
        open_sim(f"sim://crossbar?{query}")


def test_a_conv_only_network_opens_and_a_bare_input_width_does_not():
    assert [s.kind for s in open_sim("sim://crossbar?layers=64&conv=4c3p2").info().layers] == ["conv"]
    with pytest.raises(DeviceURLError, match="at least two widths"):
        open_sim("sim://crossbar?layers=64")
