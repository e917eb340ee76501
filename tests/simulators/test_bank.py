"""The noise bank: signed slices of one seeded buffer, reproducible, never written, statics left exact."""

import pytest
import torch

from devices import DeviceURLError, open_device
from simulators.bank import BankNoise, NoiseBank


def _source(bank, seed=0):
    return BankNoise(bank, torch.Generator().manual_seed(seed))


def test_the_bank_is_standardized_and_seeded():
    bank = NoiseBank(seed=1, size=1 << 16)
    assert abs(bank.values.mean().item()) < 1e-6 and bank.values.std().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(bank.values, NoiseBank(seed=1, size=1 << 16).values)
    assert not torch.equal(bank.values, NoiseBank(seed=2, size=1 << 16).values)


def _offset(bank, values):
    """Where ``values`` (or their negation) start in the bank."""
    for sign in (1.0, -1.0):
        for start in torch.nonzero(bank.values == sign * values[0]).flatten().tolist():
            if torch.equal(bank.values[start:start + len(values)] * sign, values):
                return start, sign
    raise AssertionError("not a slice of the bank")


def test_a_draw_is_a_signed_slice_at_a_random_offset_and_a_fresh_tensor():
    bank = NoiseBank(seed=3, size=1 << 12)
    kept = bank.values.clone()
    source = _source(bank)
    draws = [source.normal((10, 20)) for _ in range(40)]
    places = [_offset(bank, d.flatten()) for d in draws]
    assert len({start for start, _ in places}) == 40 and {sign for _, sign in places} == {1.0, -1.0}
    for d in draws:
        d.mul_(0)  # the caller owns a draw
    assert torch.equal(bank.values, kept)


def test_draws_follow_the_generator_and_scale_by_std():
    bank = NoiseBank(seed=4, size=1 << 16)
    a, b = _source(bank, 7), _source(bank, 7)
    assert all(torch.equal(a.normal((3, 100)), b.normal((3, 100))) for _ in range(5))
    assert a.normal((20_000,), 0.5).std().item() == pytest.approx(0.5, rel=0.05)
    std = torch.tensor([0.1, 2.0])
    scaled = a.normal((20_000, 2), std)
    assert torch.allclose(scaled.std(0), std, rtol=0.05)


def test_draws_reuse_the_banks_values_where_exact_draws_never_repeat():
    """What the bank trades for speed: across draws the run sees at most the bank's values."""
    bank = NoiseBank(seed=6, size=1000)
    banked = torch.cat([_source(bank).normal((500,)) for _ in range(200)])
    exact = torch.randn(len(banked), generator=torch.Generator().manual_seed(6))
    assert len(torch.unique(banked.abs())) <= 1000 and len(torch.unique(exact)) > 0.99 * len(exact)


def test_a_draw_longer_than_the_bank_is_several_slices():
    bank = NoiseBank(seed=5, size=1000)
    draw = _source(bank).normal((5, 500))
    for piece in draw.flatten().split(1000):
        _offset(bank, piece)
    assert _source(bank).normal((0, 3)).shape == (0, 3)


def test_bank_mode_by_url_keeps_the_static_draws_exact():
    exact = open_device("sim://crossbar?preset=pcm&layers=40,30,10&seed=2")
    bank = open_device("sim://crossbar?preset=pcm&layers=40,30,10&seed=2&noise=bank")
    (stuck_e, *_), (stuck_b, *_) = exact.physics.write_effects[1:], bank.physics.write_effects[1:]
    assert all(torch.equal(u, v) for u, v in zip(stuck_e.index + stuck_e.plus, stuck_b.index + stuck_b.plus))
    drift_e, drift_b = exact.physics.ageing_effects[0], bank.physics.ageing_effects[0]
    assert all(torch.equal(u[s], v[s]) for u, v in zip(drift_e.nu, drift_b.nu) for s in ("plus", "minus"))
    with pytest.raises(DeviceURLError, match="noise"):
        open_device("sim://crossbar?noise=fast")
