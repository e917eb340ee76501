"""How programmed conductances change with time: drift."""

import math

import torch
from pydantic import Field

from simulators.crossbar.conductance import ConductanceOptions, DifferentialPair
from simulators.noise import NoiseStreams


class DriftOptions(ConductanceOptions):
    drift_nu: float = Field(0.0, ge=0, description="mean drift exponent nu (0: no drift)")
    drift_nu_std: float = Field(0.0, ge=0, description="device-to-device spread of nu")
    drift_t0: float = Field(20.0, gt=0, description="drift reference time t0, seconds")


class Drift:
    """Conductance drift: G(t) = G0 ((t + t0) / t0)^-nu, t the device time since the layer's last write.

    Each device has its own nu ~ N(``drift_nu``, ``drift_nu_std``^2), clamped at 0 and drawn once
    (static stream, effects ``drift/LAYER/plus`` and ``drift/LAYER/minus``). Source: aihwkit's
    PCM drift model (nu 0.05 +- 0.01, t0 = 20 s).
    """

    def __init__(self, options: DriftOptions, shapes: list[tuple[int, ...]], streams: NoiseStreams,
                 device: torch.device) -> None:
        self.pair = DifferentialPair(options)
        self.t0 = options.drift_t0
        self.nu: list[dict[str, torch.Tensor]] = []
        for layer, shape in enumerate(shapes):
            sides = {}
            for side in ("plus", "minus"):
                nu = options.drift_nu + streams.static(f"drift/{layer}/{side}").normal(shape, options.drift_nu_std)
                sides[side] = nu.clamp(min=0).to(device)
            self.nu.append(sides)

    @staticmethod
    def wanted(options: DriftOptions) -> bool:
        return options.drift_nu > 0

    def __call__(self, layer: int, w: torch.Tensor, elapsed: float) -> torch.Tensor:
        """Weights ``w`` of ``layer`` as read ``elapsed`` device seconds after their write."""
        log_f = math.log((elapsed + self.t0) / self.t0)
        g_plus, g_minus = self.pair.conductances(w)
        decayed_plus = g_plus * torch.exp(-self.nu[layer]["plus"] * log_f)
        decayed_minus = g_minus * torch.exp(-self.nu[layer]["minus"] * log_f)
        return self.pair.weight(decayed_plus, decayed_minus)
