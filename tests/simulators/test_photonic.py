import math

import pytest
import torch

from devices import DeviceURLError, Perturbation, open_device
from simulators import PhotonicOptions, SimulatedPhotonicMesh
from simulators.photonic import clements_columns, propagate


@pytest.mark.parametrize("modes", [2, 5, 8, 16])
def test_noise_free_mesh_is_unitary(modes):
    gen = torch.Generator().manual_seed(modes)
    n_mzi = modes * (modes - 1) // 2
    phases = torch.rand(n_mzi, 2, generator=gen) * 2 * math.pi
    columns = clements_columns(modes)
    assert sum(len(c) for c in columns) == n_mzi
    u = propagate(torch.eye(modes, dtype=torch.complex64), phases[:, 0], phases[:, 1], columns)
    assert (u.conj().T @ u - torch.eye(modes)).abs().max() < 1e-5


def test_intensities_of_the_ideal_device_conserve_power_and_match_autograd_path():
    device = SimulatedPhotonicMesh(PhotonicOptions(layers=[6, 6]))
    phases = torch.rand(15, 2, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    x = torch.rand(20, 6, generator=torch.Generator().manual_seed(1))
    out = device.forward([{"phases": phases}], x)[0]
    assert torch.allclose(out.sum(1), x.square().sum(1), rtol=1e-5)
    assert torch.allclose(out, device.differentiable_layer(0, {"phases": phases}, x), atol=1e-6)


def test_phase_dac_gives_two_to_the_bits_levels():
    bits = 4
    device = SimulatedPhotonicMesh(PhotonicOptions(layers=[4, 4], phase_bits=bits))
    set_phases = torch.rand(1, 6000, 2, generator=torch.Generator().manual_seed(3)) * 2 * math.pi
    levels = torch.unique(device._effective_phases(0, set_phases))
    assert len(levels) == 2 ** bits  # 1.2e4 draws hit every level, and no other value
    assert device.info().layers[0].params[0].resolution == pytest.approx(2 * math.pi / 2 ** bits)


@pytest.mark.parametrize("noise", ["exact", "bank"])
def test_phase_noise_sigma_per_read(noise):
    sigma = 0.02
    device = SimulatedPhotonicMesh(PhotonicOptions(layers=[4, 4], phase_noise=sigma, noise=noise))
    eff = device._effective_phases(0, torch.zeros(1, 6, 2))
    noisy = [device.streams.normal("read", "phase/0", (1, 6, 2), sigma) for _ in range(2000)]
    assert torch.cat(noisy).std().item() == pytest.approx(sigma, rel=0.05) and eff.abs().max() == 0


def test_static_bias_is_what_in_situ_training_absorbs():
    ideal = open_device("sim://photonic?layers=6,6")
    biased = open_device("sim://photonic?layers=6,6&phase_bias=true&seed=3")
    phases = torch.rand(15, 2, generator=torch.Generator().manual_seed(2)) * 2 * math.pi
    x = torch.rand(10, 6)
    shifted = torch.remainder(phases + biased._static[0]["bias"], 2 * math.pi)
    assert torch.allclose(biased.forward([{"phases": phases}], x)[0],
                          ideal.forward([{"phases": shifted}], x)[0], atol=1e-4)


def test_mesh_chunks_are_queried_one_at_a_time():
    device = open_device("sim://photonic?layers=6,4&chunks=5")
    spec = device.info().layers[0]
    assert not spec.spliceable and spec.n_chunks() == 5 and spec.chunk_size() == 6
    phases = {"phases": torch.rand(15, 2) * 2 * math.pi}
    plus, minus = device.perturbed_pairs(0, phases, torch.rand(3, 6), Perturbation((1, 2), 0.1, chunk=4))
    assert plus.shape == minus.shape == (2, 3, 4) and device.counters.queries == 4
    with pytest.raises(DeviceURLError, match="does not divide"):
        open_device("sim://photonic?layers=6,4&chunks=7")


@pytest.mark.parametrize("noise", ["exact", "bank"])
def test_silicon_preset_is_seeded_and_reproducible(noise):
    def run(seed):
        device = open_device(f"sim://photonic?preset=silicon&layers=8,8,4&seed={seed}&noise={noise}")
        phases = [{"phases": torch.full(p.params[0].shape, 1.0)} for p in device.info().layers]
        return device.forward(phases, torch.rand(5, 8, generator=torch.Generator().manual_seed(0)))
    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    with pytest.raises(DeviceURLError, match="silicon"):
        open_device("sim://photonic?preset=pcm")
