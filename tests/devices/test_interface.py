import pytest
import torch

from devices import (
    Device,
    DeviceConfigError,
    Perturbation,
    check_params,
    clip_to_bounds,
    join_chunks,
    split_chunks,
)
from simulators import CrossbarOptions, SimulatedCrossbar


def _params(device: Device, seed: int = 0, scale: float = 0.5):
    gen = torch.Generator().manual_seed(seed)
    return [{p.name: (torch.rand(p.shape, generator=gen) * 2 - 1) * scale for p in spec.params}
            for spec in device.info().layers]


def test_split_and_join_round_trip():
    device = SimulatedCrossbar(CrossbarOptions(layers=[5, 3]))
    spec = device.info().layers[0]
    params = _params(device)[0]
    flat = join_chunks(spec, params)
    assert flat.shape == (3, 6)
    back = split_chunks(spec, flat)
    assert all(torch.equal(back[k], params[k]) for k in params)


def test_default_perturbed_pairs_match_the_vectorized_simulator():
    device = SimulatedCrossbar(CrossbarOptions(layers=[7, 5, 3]))
    params = _params(device, scale=0.99)  # near the bounds, so clipping is exercised
    x = torch.rand(11, 5)
    pert = Perturbation((4, 5, 6), 0.05)
    fast = device.perturbed_pairs(1, params[1], x, pert)
    slow = Device.perturbed_pairs(device, 1, params[1], x, pert)
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, atol=1e-6)


def test_chunk_restricted_perturbation_moves_only_that_unit():
    device = SimulatedCrossbar(CrossbarOptions(layers=[6, 4]))
    params = _params(device)
    x = torch.rand(8, 6)
    base = device.forward(params, x)[0]
    plus, minus = device.perturbed_pairs(0, params[0], x, Perturbation((9,), 0.1, chunk=2))
    others = [0, 1, 3]
    assert torch.allclose(plus[0][:, others], base[:, others], atol=1e-6)
    assert not torch.allclose(plus[0][:, 2], minus[0][:, 2])


def test_check_params_refuses_bad_shapes_and_out_of_bounds():
    device = SimulatedCrossbar(CrossbarOptions(layers=[4, 3]))
    info = device.info()
    good = _params(device)
    check_params(info, good)
    with pytest.raises(DeviceConfigError, match="outside"):
        check_params(info, [{"weight": good[0]["weight"] * 3, "bias": good[0]["bias"]}])
    with pytest.raises(DeviceConfigError, match="shape"):
        check_params(info, [{"weight": torch.zeros(3, 5), "bias": good[0]["bias"]}])
    with pytest.raises(DeviceConfigError, match="layers"):
        check_params(info, good * 2)
    with pytest.raises(DeviceConfigError):
        device.forward([{"weight": good[0]["weight"] * 3, "bias": good[0]["bias"]}], torch.rand(2, 4))


def test_clip_to_bounds_clips_and_wraps():
    device = SimulatedCrossbar(CrossbarOptions(layers=[2, 2]))
    clipped = clip_to_bounds(device.info().layers[0], {"weight": torch.tensor([[2.0, -3.0], [0.5, 0]]),
                                                      "bias": torch.zeros(2)})
    assert clipped["weight"].tolist() == [[1.0, -1.0], [0.5, 0.0]]
