"""The analog product: IR drop along a tile's rows, and column sums per tile."""

import torch
from pydantic import Field

from simulators.options import StrictOptions


class TileOptions(StrictOptions):
    tile_rows: int = Field(0, ge=0, description="inputs per tile, each tile with its own ADC (0: one tile)")


class IRDropOptions(TileOptions):
    ir_drop: float = Field(0.0, ge=0, lt=1, description="attenuation of a tile's farthest row")


class TileSums:
    """Tiles: an array wider than ``tile_rows`` inputs is split into tiles of ``tile_rows`` rows.

    Each tile sums its own columns (and has its own ADC); the periphery adds the tiles digitally,
    scales by the layer's gain and adds the digital bias. Source: NeuRRAM and HERMES (256 x 256 tiles).
    """

    def __init__(self, options: TileOptions) -> None:
        self.rows = options.tile_rows

    def rows_per_tile(self, inputs: int) -> int:
        return self.rows or inputs

    def column_sums(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Raw column sums per tile: (..., tiles, batch, outputs) for weights (..., outputs, inputs)."""
        rows = self.rows_per_tile(x.shape[-1])
        if rows >= x.shape[-1]:
            return torch.matmul(x, weight.transpose(-1, -2)).unsqueeze(-3)
        # one product per tile on column slices: BLAS reads the strided weights in place, no copy
        per_tile = [torch.matmul(x[:, start:start + rows], weight[..., start:start + rows].transpose(-1, -2))
                    for start in range(0, x.shape[-1], rows)]
        return torch.stack(per_tile, -3)

    @staticmethod
    def combine(sums: torch.Tensor, bias: torch.Tensor, gain: float, owned: bool) -> torch.Tensor:
        """Pre-activations: the tiles' sums added, times ``gain``, plus ``bias``.

        ``owned`` sums are the caller's scratch and may be overwritten (never a cached read).
        """
        tiles = sums.squeeze(-3) if sums.shape[-3] == 1 else sums.sum(-3)
        out = tiles if owned or sums.shape[-3] > 1 else None
        return torch.add(bias.unsqueeze(-2), tiles, alpha=gain, out=out)


class IRDrop:
    """IR drop: the wire resistance attenuates rows farther from the driver, linearly within a tile.

    Row r of a tile of R rows reads scaled by 1 - ``ir_drop`` * r / (R - 1): the farthest row
    loses ``ir_drop`` of its signal. Off in every preset; set it to study it (CrossSim and
    NeuroSim model the parasitic resistances in detail).
    """

    def __init__(self, options: IRDropOptions, shapes: list[tuple[int, ...]], device: torch.device) -> None:
        self.row_gain = []
        for shape in shapes:
            rows = options.tile_rows or shape[1]
            position = torch.arange(shape[1]) % rows
            self.row_gain.append((1 - options.ir_drop * position / max(rows - 1, 1)).to(device))

    @staticmethod
    def wanted(options: IRDropOptions) -> bool:
        return options.ir_drop > 0

    def __call__(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return x * self.row_gain[layer]
