"""Choose the perturbation step eps above the device's noise and quantization floors.

Three floors, the largest wins: a starting step (0.01 of the unit parameter range), what the
device declares (3 x the write noise a programming pulse adds, 2 x the parameter resolution, of the
arrays the estimate moves), and what is measured at start-up from repeated base queries on one batch:

- weight space: the loss noise, against the loss change one perturbation pair produces. A central
  difference is useful when that change is at least ``SNR`` times the noise of a difference of two
  noisy losses.
- activity space: each output's read noise, against the mean slope a bias pair measures on the
  outputs that respond. The per-sample, per-unit derivative is useful when a unit's change
  ``2 eps f'`` is at least ``SNR`` times the noise of a difference of two reads.
"""

import logging
import math
from dataclasses import asdict, dataclass

import torch

from devices.info import DeviceInfo
from devices.interface import Device, Perturbation
from hil.model import MonoForward

log = logging.getLogger(__name__)

EPS_START = 0.01
SNR = 3.0
REPEATS = 8
CAP = 0.25  # of the parameter range: beyond this a "derivative" is no longer local
MIN_SLOPE = 0.05  # an activation flatter than this on average is saturated, not a reason for a huge step


@dataclass
class Calibration:
    eps: float
    declared_floor: float
    noise: float
    """Loss noise (weight space) or the median read noise of an output (activity space)."""
    measured_floor: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def choose_eps(device: Device, model: MonoForward, x: torch.Tensor, y: torch.Tensor,
               directions: list[int], distribution: str, layers: list[int]) -> Calibration:
    """Weight-space eps for ``layers``: measure the floors on batch ``(x, y)`` (logged at INFO)."""
    info = device.info()
    declared = _declared(info, layers, None)
    params = model.device_params()
    with torch.no_grad():
        repeats = torch.stack([
            torch.stack([model.layer_loss(i, a, y) for i, a in enumerate(device.forward(params, x))])
            for _ in range(REPEATS)
        ])
        noise = float(repeats.std(0)[layers].max())
        acts = device.forward(params, x)
        inputs = [x, *acts[:-1]]
        trial = max(EPS_START, declared)
        measured = 0.0
        if noise > 0:
            for i in layers:
                seeds = tuple(range(1, directions[i] + 1))
                plus, minus = device.perturbed_pairs(i, params[i], inputs[i],
                                                     Perturbation(seeds, trial, distribution))  # type: ignore[arg-type]
                change = (model.layer_loss(i, plus, y) - model.layer_loss(i, minus, y)).abs().median().item()
                needed = SNR * math.sqrt(2) * noise
                measured = max(measured, trial * needed / max(change, 1e-12))
    return _chosen("weight", info, layers, declared, noise, measured)


def choose_activity_eps(device: Device, model: MonoForward, x: torch.Tensor, layers: list[int]) -> Calibration:
    """Activity-space eps for ``layers``: read noise of the outputs against a bias pair's slope."""
    info = device.info()
    declared = _declared(info, layers, "bias")
    params = model.device_params()
    with torch.no_grad():
        repeats = [torch.stack(layer) for layer in zip(*(device.forward(params, x) for _ in range(REPEATS)))]
        trial = max(EPS_START, declared)
        noise = measured = 0.0
        for i in layers:
            spread = repeats[i].std(0)
            if not bool((spread > 0).any()):
                continue
            read_noise = float(spread[spread > 0].median())
            plus, minus = device.perturbed_pairs(i, params[i], x if i == 0 else repeats[i - 1][0],
                                                 Perturbation((0,), trial, "bias"))
            # the mean signed change over responsive outputs: read noise averages out of it
            responsive = repeats[i].mean(0) != 0
            slope = float((plus - minus)[0][responsive].mean()) / (2 * trial) if bool(responsive.any()) else 1.0
            slope = max(slope, MIN_SLOPE)
            noise = max(noise, read_noise)
            measured = max(measured, SNR * math.sqrt(2) * read_noise / (2 * slope))
    return _chosen("activity", info, layers, declared, noise, measured)


def _declared(info: DeviceInfo, layers: list[int], name: str | None) -> float:
    """The floor the device declares for the arrays a perturbation moves (``name``: only that array)."""
    return max((max(3 * p.write_noise, 2 * p.resolution) for i in layers for p in info.layers[i].params
                if name in (None, p.name)), default=0.0)


def _chosen(kind: str, info: DeviceInfo, layers: list[int], declared: float, noise: float,
            measured: float) -> Calibration:
    span = min(p.high - p.low for i in layers for p in info.layers[i].params)
    eps = min(max(EPS_START, declared, measured), CAP * span / 2)
    log.info("%s-space eps %.4g chosen: noise %.3g, declared floor %.3g, measured floor %.3g",
             kind, eps, noise, declared, measured)
    return Calibration(eps, declared, noise, measured)
