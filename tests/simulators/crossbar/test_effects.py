"""Each physics effect, on alone, matches its configured statistic (fixed seeds, >= 1e4 samples).

Every statistic holds with either noise source: the exact per-draw generator and the noise bank.
"""

import math

import pytest
import torch

from devices import DeviceURLError, Perturbation, open_device
from simulators import CrossbarOptions, SimulatedCrossbar
from simulators.crossbar.programming import pcm_sigma


@pytest.fixture(params=["exact", "bank"])
def noise(request) -> str:
    return request.param


def _device(layers, noise="exact", **physics) -> SimulatedCrossbar:
    return SimulatedCrossbar(CrossbarOptions(layers=layers, activation="identity", noise=noise, **physics))


def _constant(layers, value):
    n_in, n_out = layers
    return [{"weight": torch.full((n_out, n_in), value), "bias": torch.zeros(n_out)}]


def _ideal(params, x):
    w = params[0]["weight"]
    return x @ w.T / math.sqrt(w.shape[1]) + params[0]["bias"]


def test_every_effect_off_is_the_ideal_computation_even_with_tiles():
    device = _device([300, 40], tile_rows=64)
    gen = torch.Generator().manual_seed(0)
    params = [{"weight": torch.rand(40, 300, generator=gen) * 2 - 1, "bias": torch.rand(40, generator=gen)}]
    x = torch.rand(50, 300, generator=gen)
    assert torch.allclose(device.forward(params, x)[0], _ideal(params, x), atol=1e-5)


def test_ir_drop_attenuates_rows_linearly_within_each_tile():
    device = _device([8, 1], tile_rows=4, ir_drop=0.3)
    out = device.forward(_constant([8, 1], 1.0), torch.eye(8))[0].flatten() * math.sqrt(8)
    want = torch.tensor([1 - 0.3 * (row % 4) / 3 for row in range(8)])
    assert torch.allclose(out, want, atol=1e-6)


def test_read_noise_sigma(noise):
    sigma = 0.02
    device = _device([100, 100], noise, read_noise=sigma)
    gen = torch.Generator().manual_seed(1)
    params = [{"weight": torch.rand(100, 100, generator=gen) * 2 - 1, "bias": torch.zeros(100)}]
    x = torch.rand(200, 100, generator=gen)
    residual = (device.forward(params, x)[0] - _ideal(params, x)) * math.sqrt(100)
    normalized = residual / x.norm(dim=1, keepdim=True)  # 2e4 samples of N(0, sigma^2)
    assert normalized.std().item() == pytest.approx(sigma, rel=0.05)
    assert abs(normalized.mean().item()) < 3 * sigma / math.sqrt(normalized.numel())


def test_output_noise_sigma_and_adc_levels(noise):
    device = _device([64, 100], noise, output_noise=0.3)
    params = _constant([64, 100], 0.1)
    x = torch.rand(200, 64, generator=torch.Generator().manual_seed(2))
    residual = (device.forward(params, x)[0] - _ideal(params, x)) * 8  # back to column-sum units
    assert residual.std().item() == pytest.approx(0.3, rel=0.05)

    bits = 4
    adc = _device([64, 100], noise, adc_bits=bits, adc_clip=2.0)
    gen = torch.Generator().manual_seed(3)
    params = [{"weight": torch.rand(100, 64, generator=gen) * 2 - 1, "bias": torch.zeros(100)}]
    sums = adc.forward(params, torch.rand(200, 64, generator=gen) * 2 - 1)[0] * 8
    levels = torch.unique(torch.round(sums * 1e4))
    assert len(levels) <= 2 ** bits
    assert sums.abs().max().item() == pytest.approx(2.0, abs=1e-5)  # saturates at the clip


def test_dac_quantizes_inputs(noise):
    bits = 3
    device = _device([1, 1], noise, dac_bits=bits)
    x = torch.linspace(-2, 2, 10_001).unsqueeze(1)
    out = device.forward(_constant([1, 1], 1.0), x)[0]
    assert len(torch.unique(out)) <= 2 ** bits and out.max().item() == pytest.approx(1.0)


@pytest.mark.parametrize("nu_std", [0.0, 0.01])
def test_drift_slope_in_log_log_is_minus_nu(noise, nu_std):
    nu, t0 = 0.06, 20.0
    device = _device([100, 100], noise, drift_nu=nu, drift_nu_std=nu_std, drift_t0=t0, read_seconds=5.0)
    params = _constant([100, 100], 0.8)
    x = torch.ones(1, 100)
    times, means = [], []
    for _ in range(60):  # each read advances the clock 5 s
        elapsed = device.clock - device._written_at[0]
        times.append(math.log((elapsed + t0) / t0))
        means.append(math.log(device.forward(params, x)[0].mean().item()))
    t, m = torch.tensor(times[1:]), torch.tensor(means[1:])
    slope = ((t - t.mean()) * (m - m.mean())).sum() / (t - t.mean()).square().sum()
    assert slope.item() == pytest.approx(-nu, rel=0.05)


def test_stuck_at_fractions(noise):
    p_min, p_max, n = 0.02, 0.03, 40_000
    device = _device([1, n], noise, stuck_at_min=p_min, stuck_at_max=p_max)
    w = device.forward(_constant([1, n], 0.5), torch.ones(1, 1))[0][0]
    # plus device stuck at g_min -> 0, at g_max -> 1; minus device stuck at g_max -> -0.5
    for value, p in ((0.0, p_min), (1.0, p_max), (-0.5, p_max)):
        frac = ((w - value).abs() < 1e-4).float().mean().item()
        assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("model", ["percent", "pcm"])
def test_programming_noise_sigma(noise, model):
    n = 20_000
    device = _device([1, n], noise, prog_noise=model, prog_noise_percent=3.0, on_off_ratio=25.0)
    w = device.forward(_constant([1, n], 0.0), torch.ones(1, 1))[0][0]
    span = 1 - 1 / 25
    g_min = torch.tensor(1 / 25)
    per_device = 0.03 if model == "percent" else pcm_sigma(g_min).item()
    assert w.std().item() == pytest.approx(math.sqrt(2) * per_device / span, rel=0.05)


def test_noise_is_redrawn_only_on_writes(noise):
    device = _device([1, 10_000], noise, prog_noise="percent")
    params = _constant([1, 10_000], 0.2)
    a = device.forward(params, torch.ones(1, 1))[0]
    assert torch.equal(a, device.forward(params, torch.ones(1, 1))[0])  # no rewrite, same weights
    moved = [{"weight": params[0]["weight"] + 0.1, "bias": params[0]["bias"]}]
    device.forward(moved, torch.ones(1, 1))
    assert not torch.equal(a, device.forward(params, torch.ones(1, 1))[0])  # rewritten: new draw


def _noisy(noise, url_extra=""):
    return open_device(f"sim://crossbar?preset=pcm&layers=40,30,10&activation=tanh&noise={noise}{url_extra}")


def _exercise(device):
    gen = torch.Generator().manual_seed(7)
    params = [{p.name: (torch.rand(p.shape, generator=gen) - 0.5) for p in s.params} for s in device.info().layers]
    x = torch.rand(16, 40, generator=gen)
    outs = device.forward(params, x)
    outs += list(device.perturbed_pairs(1, params[1], outs[0], Perturbation((3, 4), 0.05)))
    outs += device.forward(params, x)
    return outs


def test_seeded_runs_reproduce_bit_for_bit(noise):
    a, b, c = _exercise(_noisy(noise)), _exercise(_noisy(noise)), _exercise(_noisy(noise, "&seed=1"))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_switching_one_effect_off_leaves_the_others_draws_unchanged(noise):
    with_read = _device([50, 2000], noise, prog_noise="percent", read_noise=0.05, output_noise=0.1)
    without = _device([50, 2000], noise, prog_noise="percent", read_noise=0.0, output_noise=0.1)
    params = _constant([50, 2000], 0.3)
    x = torch.ones(3, 50)
    with_read.forward(params, x)
    without.forward(params, x)
    assert torch.equal(with_read._programmed[0], without._programmed[0])
    # the output-noise draws are shared too: the difference is the read noise alone
    diff = (with_read.forward(params, x)[0] - without.forward(params, x)[0]) * math.sqrt(50)
    assert (diff / math.sqrt(50)).std().item() == pytest.approx(0.05, rel=0.05)


def test_state_dict_resumes_bit_for_bit(noise):
    device = _noisy(noise)
    _exercise(device)
    state = device.state_dict()
    after = _exercise(device)
    fresh = _noisy(noise)
    fresh.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(after, _exercise(fresh)))


def test_state_dict_rewinds_the_device_it_came_from(noise):
    device = _noisy(noise)
    state = device.state_dict()  # before any stream is drawn from
    first = _exercise(device)
    device.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(first, _exercise(device)))


def test_clock_advances_with_writes_reads_and_link():
    device = _device([10, 4], write_seconds=1e-6, write_verify=3, read_seconds=2e-6,
                     link_bytes_per_second=1e6, link_latency=1e-3)
    device.forward(_constant([10, 4], 0.1), torch.ones(5, 10))
    writes, reads = 4 * 1e-6 * 3, 5 * 2e-6
    link_bytes = (5 * 10 + 44 + 5 * 4) * 4
    assert device.counters.device_seconds == pytest.approx(writes + reads)
    assert device.clock == pytest.approx(writes + reads + 3 * 1e-3 + link_bytes / 1e6)
    assert device.counters.extra["writes_per_cell"] == 1


def test_presets_by_url_with_overrides_and_clear_errors():
    device = open_device("sim://crossbar?preset=pcm&seed=3&read_noise=0")
    assert device.options.prog_noise == "pcm" and device.options.read_noise == 0 and device.options.seed == 3
    assert "pcm" in device.info().identity
    with pytest.raises(DeviceURLError, match="ideal.*pcm.*rram"):
        open_device("sim://crossbar?preset=flash")
    with pytest.raises(DeviceURLError, match="read_noise"):
        open_device("sim://crossbar?preset=pcm&readnoise=0")


def test_noisy_perturbation_pairs_match_single_queries_in_distribution(noise):
    device = open_device(f"sim://crossbar?preset=rram&layers=64,32,10&activation=tanh&noise={noise}")
    gen = torch.Generator().manual_seed(5)
    params = [{p.name: (torch.rand(p.shape, generator=gen) - 0.5) for p in s.params} for s in device.info().layers]
    x = torch.rand(64, 64, generator=gen)
    pert = Perturbation(tuple(range(8)), 0.1)
    plus, _ = device.perturbed_pairs(0, params[0], x, pert)
    v = pert.vectors(device.info().layers[0])
    ideal = torch.tanh(x @ (params[0]["weight"] + 0.1 * v[:, :, :64]).transpose(1, 2) / 8
                       + params[0]["bias"] + 0.1 * v[:, :, 64].unsqueeze(1))
    err = plus - ideal
    assert err.abs().mean() < 0.05 and err.abs().mean() > 1e-4  # noisy, but around the ideal
