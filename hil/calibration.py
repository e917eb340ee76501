"""Choose the perturbation step eps above the device's noise and quantization floors.

Three floors, the largest wins: a starting step (0.01 of the unit parameter range), what the
device declares (3 x the write noise a programming pulse adds, 2 x the parameter resolution), and
what is measured at start-up: the loss noise of repeated base queries on one batch, against the loss
change one perturbation pair produces. A central difference is useful when that change is at least
``SNR`` times the noise of a difference of two noisy losses.
"""

import logging
import math
from dataclasses import asdict, dataclass

import torch

from devices.interface import Device, Perturbation
from hil.model import MonoForward

log = logging.getLogger(__name__)

EPS_START = 0.01
SNR = 3.0
REPEATS = 8
CAP = 0.25  # of the parameter range: beyond this a "derivative" is no longer local


@dataclass
class Calibration:
    eps: float
    declared_floor: float
    loss_noise: float
    measured_floor: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def choose_eps(device: Device, model: MonoForward, x: torch.Tensor, y: torch.Tensor,
               directions: list[int], distribution: str) -> Calibration:
    """Measure the floors on batch ``(x, y)`` and return the step to use (logged at INFO)."""
    info = device.info()
    declared = max((max(3 * p.write_noise, 2 * p.resolution) for spec in info.layers for p in spec.params),
                   default=0.0)
    params = model.device_params()
    with torch.no_grad():
        repeats = torch.stack([
            torch.stack([model.layer_loss(i, a, y) for i, a in enumerate(device.forward(params, x))])
            for _ in range(REPEATS)
        ])
        noise = float(repeats.std(0).max())
        acts = device.forward(params, x)
        inputs = [x, *acts[:-1]]
        trial = max(EPS_START, declared)
        measured = 0.0
        if noise > 0:
            for i in range(len(model.projections)):
                seeds = tuple(range(1, directions[i] + 1))
                plus, minus = device.perturbed_pairs(i, params[i], inputs[i],
                                                     Perturbation(seeds, trial, distribution))  # type: ignore[arg-type]
                change = (model.layer_loss(i, plus, y) - model.layer_loss(i, minus, y)).abs().median().item()
                needed = SNR * math.sqrt(2) * noise
                measured = max(measured, trial * needed / max(change, 1e-12))
    span = min(p.high - p.low for spec in info.layers for p in spec.params)
    eps = min(max(EPS_START, declared, measured), CAP * span / 2)
    result = Calibration(eps, declared, noise, measured)
    log.info("eps %.4g chosen: loss noise %.3g, declared floor %.3g, measured floor %.3g",
             eps, noise, declared, measured)
    return result
