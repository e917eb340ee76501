"""Devices that ignore writes: stuck-at faults."""

import torch
from pydantic import Field

from simulators.crossbar.conductance import ConductanceOptions, DifferentialPair
from simulators.noise import NoiseStreams


class StuckOptions(ConductanceOptions):
    stuck_at_min: float = Field(0.0, ge=0, le=1, description="fraction of devices stuck at g_min")
    stuck_at_max: float = Field(0.0, ge=0, le=1, description="fraction of devices stuck at g_max")


class StuckDevices:
    """Stuck-at faults: a fraction of devices sits at g_min or at g_max whatever is written.

    Each device of each pair is drawn once, independently (static stream, effects
    ``stuck/LAYER/plus`` and ``stuck/LAYER/minus``); a write's weight is rebuilt from the pair
    with its stuck devices in place. Source: MemTorch (0.1-1 % stuck; the rate is unverified).
    """

    def __init__(self, options: StuckOptions, shapes: list[tuple[int, ...]], streams: NoiseStreams,
                 device: torch.device) -> None:
        self.pair = DifferentialPair(options)
        self.index, self.plus, self.minus = [], [], []
        for layer, shape in enumerate(shapes):
            sides = {}
            for side in ("plus", "minus"):
                u = streams.static(f"stuck/{layer}/{side}").uniform(shape).reshape(-1)
                stuck = torch.full_like(u, -1.0)  # -1: not stuck
                stuck[u < options.stuck_at_min] = self.pair.g_min
                stuck[(u >= options.stuck_at_min) & (u < options.stuck_at_min + options.stuck_at_max)] = 1.0
                sides[side] = stuck
            index = torch.nonzero((sides["plus"] >= 0) | (sides["minus"] >= 0)).squeeze(1)
            self.index.append(index.to(device))
            self.plus.append(sides["plus"][index].to(device))
            self.minus.append(sides["minus"][index].to(device))

    @staticmethod
    def wanted(options: StuckOptions) -> bool:
        return options.stuck_at_min > 0 or options.stuck_at_max > 0

    def __call__(self, layer: int, w: torch.Tensor, sigma_at: torch.Tensor, owned: bool) -> torch.Tensor:
        """``w`` with the stuck devices of ``layer`` in place (a copy unless ``owned``)."""
        flat = w.reshape(*w.shape[:-2], -1)
        if not owned:
            flat = flat.clone()
        index = self.index[layer]
        g_plus, g_minus = self.pair.conductances(flat[..., index])
        g_plus = torch.where(self.plus[layer] >= 0, self.plus[layer], g_plus)
        g_minus = torch.where(self.minus[layer] >= 0, self.minus[layer], g_minus)
        flat[..., index] = self.pair.weight(g_plus, g_minus)
        return flat.reshape(w.shape)
