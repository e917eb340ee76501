"""What a write leaves on the array: programming noise."""

import math
from typing import Literal

import torch
from pydantic import Field

from simulators.crossbar.conductance import ConductanceOptions, DifferentialPair
from simulators.noise import NoiseSource

PCM_G_MAX_US = 25.0


class ProgrammingNoiseOptions(ConductanceOptions):
    prog_noise: Literal["none", "percent", "pcm"] = Field("none", description="programming-noise model")
    prog_noise_percent: float = Field(3.0, ge=0, description="sigma in % of g_max for the percent model")


def pcm_sigma(g: torch.Tensor) -> torch.Tensor:
    """PCM programming noise (aihwkit's fit) in fractions of g_max, for conductance fraction g."""
    return (0.263 + 1.965 * g - 1.173 * g.square()) / PCM_G_MAX_US


class ProgrammingNoise:
    """Programming noise: a write lands at target + N(0, sigma^2) per weight, clipped to [-1, 1].

    sigma covers both devices of the pair. ``percent``: each device off by ``prog_noise_percent``
    % of g_max (source: CrossSim's RRAM fits, 1.6-2.5 %; NeuRRAM 4-6 %). ``pcm``: aihwkit's PCM
    model, sigma = 0.263 + 1.965 g - 1.173 g^2 uS per device at conductance g (g_max = 25 uS),
    so it grows with |w|. Drawn on the write stream (effect ``programming``), once per write.
    """

    def __init__(self, options: ProgrammingNoiseOptions, noise: NoiseSource) -> None:
        self.model = options.prog_noise
        self.percent = options.prog_noise_percent
        self.pair = DifferentialPair(options)
        self.noise = noise

    @staticmethod
    def wanted(options: ProgrammingNoiseOptions) -> bool:
        return options.prog_noise != "none"

    @staticmethod
    def typical_sigma(options: ProgrammingNoiseOptions) -> float:
        """Typical sigma in weight units (the pcm model at g = 0.5), for ``ParamSpec.write_noise``."""
        span = DifferentialPair(options).span
        if options.prog_noise == "none":
            return 0.0
        if options.prog_noise == "percent":
            return math.sqrt(2) * options.prog_noise_percent / 100 / span
        g = torch.tensor([0.5, 1 / options.on_off_ratio])
        return float(pcm_sigma(g).square().sum().sqrt()) / span

    def sigma(self, w: torch.Tensor) -> torch.Tensor | float:
        """sigma of a write of weights ``w``, in weight units: one device at g_min, the other at
        g_min + |w| * span."""
        if self.model == "percent":
            return math.sqrt(2) * self.percent / 100 / self.pair.span
        at_min = pcm_sigma(torch.tensor(self.pair.g_min)).item() ** 2
        sigma_on = pcm_sigma(w.abs() * self.pair.span + self.pair.g_min)
        return sigma_on.square_().add_(at_min).sqrt_().div_(self.pair.span)

    def __call__(self, layer: int, w: torch.Tensor, sigma_at: torch.Tensor, owned: bool) -> torch.Tensor:
        """``w`` as written; ``sigma_at`` gives the weights whose sigma applies (a batch of perturbed
        writes uses its base weights: eps moves sigma by about 1 %)."""
        # into a fresh tensor: the target is never touched
        return self.noise.add_normal(w, self.sigma(sigma_at)).clamp_(-1, 1)
