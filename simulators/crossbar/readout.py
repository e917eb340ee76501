"""What a read adds to the column sums: read noise, output noise, and the per-tile ADC.

Each takes the column sums per tile (..., tiles, batch, outputs), the rows the array read, and
whether the sums are the caller's scratch (``owned``: they may be overwritten), and returns sums
the caller owns.
"""

import torch
from pydantic import Field

from simulators.crossbar.array import TileOptions
from simulators.noise import NoiseSource
from simulators.options import StrictOptions
from simulators.quantization import quantize


class ReadNoiseOptions(TileOptions):
    read_noise: float = Field(0.0, ge=0, description="per-read Gaussian weight noise, weight units")


class OutputNoiseOptions(StrictOptions):
    output_noise: float = Field(0.0, ge=0, description="additive Gaussian on column sums before the ADC")


class AdcOptions(StrictOptions):
    adc_bits: int = Field(0, ge=0, le=24, description="output ADC resolution per tile (0: exact)")
    adc_clip: float = Field(10.0, gt=0, description="ADC range +- in column-sum units")


class ReadNoise:
    """Short-term weight noise: every read sees each weight off by N(0, ``read_noise``^2).

    Summed over a tile's rows that is N(0, read_noise^2 |x_tile|^2) per column sum, drawn as such
    (read stream, effect ``read``). Source: aihwkit's short-term weight noise (0.01 RRAM, 0.0175 PCM).
    """

    def __init__(self, options: ReadNoiseOptions, noise: NoiseSource) -> None:
        self.sigma = options.read_noise
        self.tile_rows = options.tile_rows
        self.noise = noise

    @staticmethod
    def wanted(options: ReadNoiseOptions) -> bool:
        return options.read_noise > 0

    def __call__(self, sums: torch.Tensor, rows: torch.Tensor, owned: bool) -> torch.Tensor:
        per_tile = self.tile_rows or rows.shape[-1]
        tiles = sums.shape[-3]
        xt = torch.nn.functional.pad(rows, (0, tiles * per_tile - rows.shape[-1])).reshape(len(rows), tiles, per_tile)
        scale = self.sigma * xt.square().sum(-1).sqrt().T.unsqueeze(-1)
        return self.noise.add_normal(sums, scale, out=sums if owned else None)


class OutputNoise:
    """Output noise: N(0, ``output_noise``^2) added to every column sum before the ADC (read stream,
    effect ``output``). Source: aihwkit's out_noise (0.04)."""

    def __init__(self, options: OutputNoiseOptions, noise: NoiseSource) -> None:
        self.sigma = options.output_noise
        self.noise = noise

    @staticmethod
    def wanted(options: OutputNoiseOptions) -> bool:
        return options.output_noise > 0

    def __call__(self, sums: torch.Tensor, rows: torch.Tensor, owned: bool) -> torch.Tensor:
        return self.noise.add_normal(sums, self.sigma, out=sums if owned else None)


class ADC:
    """Per-tile ADC: each tile's column sums clipped to +-``adc_clip`` and rounded to
    2**``adc_bits`` - 1 signed levels. Source: aihwkit (8 bit, +-10 here; its library default is
    9 bit, +-12); NeuroSim uses 5 bit."""

    def __init__(self, options: AdcOptions) -> None:
        self.bits = options.adc_bits
        self.clip = options.adc_clip

    @staticmethod
    def wanted(options: AdcOptions) -> bool:
        return options.adc_bits > 0

    def __call__(self, sums: torch.Tensor, rows: torch.Tensor, owned: bool) -> torch.Tensor:
        return quantize(sums, self.bits, self.clip)
