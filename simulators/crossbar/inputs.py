"""What the array reads of an input: the input DAC."""

import torch
from pydantic import Field

from simulators.options import StrictOptions
from simulators.quantization import quantize


class DacOptions(StrictOptions):
    dac_bits: int = Field(0, ge=0, le=24, description="input DAC resolution (0: exact)")
    dac_clip: float = Field(1.0, gt=0, description="input DAC range +-")


class InputDAC:
    """Input DAC: each input clipped to +-``dac_clip`` and rounded to 2**``dac_bits`` - 1 signed levels.

    Source: aihwkit's standard hardware-aware-training preset (8 bit, +-1); CrossSim.
    """

    def __init__(self, options: DacOptions) -> None:
        self.bits = options.dac_bits
        self.clip = options.dac_clip

    @staticmethod
    def wanted(options: DacOptions) -> bool:
        return options.dac_bits > 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return quantize(x, self.bits, self.clip)
