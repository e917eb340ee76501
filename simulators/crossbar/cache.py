"""Each layer's last read, kept so the pairs that follow it on the same input skip repeating it."""

from typing import NamedTuple

import torch


class LastRead(NamedTuple):
    """A read of ``input`` (at tensor ``version``): the rows the array saw and, where they are the
    exact product of the array as written (nothing between the write and the sums), its column sums."""

    input: torch.Tensor
    version: int
    rows: torch.Tensor
    sums: torch.Tensor | None


class ReadCache:
    """One :class:`LastRead` per layer; a read of another tensor, or of this one edited, misses."""

    def __init__(self, layers: int) -> None:
        self._last: list[LastRead | None] = [None] * layers

    def remember(self, layer: int, x: torch.Tensor, rows: torch.Tensor, sums: torch.Tensor | None) -> None:
        self._last[layer] = LastRead(x, x._version, rows, sums)

    def forget(self, layer: int) -> None:
        self._last[layer] = None

    def clear(self) -> None:
        self._last = [None] * len(self._last)

    def read_of(self, layer: int, x: torch.Tensor) -> LastRead | None:
        """The last read of ``layer`` if it read this very tensor, unchanged since."""
        last = self._last[layer]
        if last is None or last.input is not x or last.version != x._version:
            return None
        return last
