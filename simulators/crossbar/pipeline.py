"""The crossbar's physics: its effects, in the order a read and a write meet them.

    read:   input DAC -> (a conv layer's patches) -> IR drop -> column sums per tile
            -> read noise -> output noise -> per-tile ADC -> tiles summed x gain + digital bias
    write:  programming noise -> stuck devices
    between a write and a read: drift

Each effect is built from its slice of the options and draws from its own seeded stream; an
effect that is off is left out, so the ideal preset runs the bare product.
"""

from typing import TYPE_CHECKING, Protocol

import torch

from simulators.crossbar.array import IRDrop, TileSums
from simulators.crossbar.drift import Drift
from simulators.crossbar.faults import StuckDevices
from simulators.crossbar.inputs import InputDAC
from simulators.crossbar.programming import ProgrammingNoise
from simulators.crossbar.readout import ADC, OutputNoise, ReadNoise
from simulators.noise import NoiseStreams

if TYPE_CHECKING:
    from simulators.crossbar.options import CrossbarOptions


class InputEffect(Protocol):
    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class RowEffect(Protocol):
    def __call__(self, layer: int, x: torch.Tensor) -> torch.Tensor: ...


class ReadoutEffect(Protocol):
    def __call__(self, sums: torch.Tensor, rows: torch.Tensor, owned: bool) -> torch.Tensor: ...


class WriteEffect(Protocol):
    def __call__(self, layer: int, w: torch.Tensor, sigma_at: torch.Tensor, owned: bool) -> torch.Tensor: ...


class AgeingEffect(Protocol):
    def __call__(self, layer: int, w: torch.Tensor, elapsed: float) -> torch.Tensor: ...


class Pipeline:
    """The effects that are on, per stage, for arrays of ``shapes`` (columns, rows) per layer."""

    def __init__(self, options: "CrossbarOptions", shapes: list[tuple[int, ...]], streams: NoiseStreams,
                 device: torch.device) -> None:
        o = options
        self.input_effects: list[InputEffect] = [InputDAC(o)] if InputDAC.wanted(o) else []
        self.row_effects: list[RowEffect] = [IRDrop(o, shapes, device)] if IRDrop.wanted(o) else []
        self.tiles = TileSums(o)
        self.readout_effects: list[ReadoutEffect] = []
        if ReadNoise.wanted(o):
            self.readout_effects.append(ReadNoise(o, streams.source("read", "read")))
        if OutputNoise.wanted(o):
            self.readout_effects.append(OutputNoise(o, streams.source("read", "output")))
        if ADC.wanted(o):
            self.readout_effects.append(ADC(o))
        self.write_effects: list[WriteEffect] = []
        if ProgrammingNoise.wanted(o):
            self.write_effects.append(ProgrammingNoise(o, streams.source("write", "programming")))
        if StuckDevices.wanted(o):
            self.write_effects.append(StuckDevices(o, shapes, streams, device))
        self.ageing_effects: list[AgeingEffect] = [Drift(o, shapes, streams, device)] if Drift.wanted(o) else []

    @property
    def writes_land_exactly(self) -> bool:
        """Every write leaves its targets on the array (a perturbation's product is linear in it)."""
        return not self.write_effects

    @property
    def reads_what_was_written(self) -> bool:
        """A read's weights are a write's targets, at any time since the write."""
        return self.writes_land_exactly and not self.ageing_effects

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the array's inputs are driven with."""
        for effect in self.input_effects:
            x = effect(x)
        return x

    def column_sums(self, layer: int, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Raw column sums per tile of ``rows`` through ``weight``: (..., tiles, batch, outputs)."""
        for effect in self.row_effects:
            rows = effect(layer, rows)
        return self.tiles.column_sums(rows, weight)

    def periphery(self, sums: torch.Tensor, rows: torch.Tensor, bias: torch.Tensor, gain: float,
                  owned: bool = False) -> torch.Tensor:
        """Pre-activations from column sums: read and output noise, ADC, tile sum, gain and bias.

        ``owned`` sums are the caller's scratch and may be overwritten (never a cached read).
        """
        for effect in self.readout_effects:
            sums = effect(sums, rows, owned)
            owned = True
        return self.tiles.combine(sums, bias, gain, owned)

    def write(self, layer: int, target: torch.Tensor, sigma_at: torch.Tensor | None = None) -> torch.Tensor:
        """Weights a write of ``target`` leaves on the array (``target`` itself is never changed).

        ``sigma_at`` gives the weights whose programming-noise sigma applies (default: ``target``).
        """
        w = target
        for effect in self.write_effects:
            w = effect(layer, w, target if sigma_at is None else sigma_at, w is not target)
        return w

    def age(self, layer: int, w: torch.Tensor, elapsed: float) -> torch.Tensor:
        """Written weights ``w`` as read ``elapsed`` device seconds after the write."""
        for effect in self.ageing_effects:
            w = effect(layer, w, elapsed)
        return w
