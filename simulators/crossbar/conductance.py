"""How a crossbar holds a weight: a differential pair of conductances."""

import torch
from pydantic import Field

from simulators.options import StrictOptions


class ConductanceOptions(StrictOptions):
    """The conductance range every device of the array shares."""

    on_off_ratio: float = Field(25.0, gt=1, description="g_max / g_min")


class DifferentialPair:
    """A weight w in [-1, 1] as two conductances, fractions of g_max: g+ - g- = w * (1 - g_min).

    One device of the pair sits at g_min, the other at g_min + |w| * span (span = 1 - g_min), so
    device effects (programming noise, drift, stuck devices) act on conductances and read back
    as weights. Source: NeuroSim and CrossSim (on/off ratio 10-100).
    """

    def __init__(self, options: ConductanceOptions) -> None:
        self.g_min = 1 / options.on_off_ratio
        self.span = 1 - self.g_min

    def conductances(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g+, g-) of the pair holding weight ``w``."""
        return self.g_min + torch.relu(w) * self.span, self.g_min + torch.relu(-w) * self.span

    def weight(self, g_plus: torch.Tensor, g_minus: torch.Tensor) -> torch.Tensor:
        """The weight a pair of conductances reads as."""
        return (g_plus - g_minus) / self.span
