"""A seeded noise bank: Gaussian draws as slices of one precomputed buffer of standard normals.

Generating a Gaussian costs several times what adding one to a tensor does (torch's CPU generator:
about 6x for half a million values), and a noisy perturbation batch draws one per perturbed weight
and one per column sum it reads. The bank draws its buffer once, from the seed, and serves each draw
as a slice of it at a random offset with a random sign: added in place with the sign folded into
the scale (no copy), or copied where a caller wants the draws themselves. What that gives up:
values are reused. Within one draw of at most ``size`` values every value is a different buffer
entry; two draws repeat the same entries shifted by the difference of their offsets, so a statistic
over a whole draw (a layer's mean programming error, a column's summed noise) is correlated between
draws that overlap, and the run sees at most ``size`` distinct values.
"""

import math
from functools import lru_cache

import torch

BANK_SIZE = 1 << 22
"""Values in a bank (16 MiB of float32): large against one draw of a layer's perturbed weights."""


@lru_cache(maxsize=4)
def _standard_normals(seed: int, size: int, device: torch.device) -> torch.Tensor:
    """``size`` normals from ``seed``, shifted and scaled to mean 0 and variance 1 exactly (in float64).

    Cached: devices opened with the same seed share one buffer, which nothing writes.
    """
    values = torch.randn(size, generator=torch.Generator().manual_seed(seed))
    std, mean = torch.std_mean(values.double())
    return values.sub_(mean.item()).div_(std.item()).to(device)


class NoiseBank:
    """A buffer of standard normals drawn once from ``seed``, standardized to mean 0 and variance 1."""

    def __init__(self, seed: int, size: int = BANK_SIZE, device: torch.device | str = "cpu") -> None:
        self.values = _standard_normals(seed, size, torch.device(device))

    def __len__(self) -> int:
        return len(self.values)


class BankNoise:
    """One effect's draws from a bank: offsets and signs come from the effect's own generator.

    A draw longer than the bank is several slices, each at its own offset.
    """

    def __init__(self, bank: NoiseBank, generator: torch.Generator) -> None:
        self.bank = bank
        self.generator = generator

    def normal(self, shape: tuple[int, ...], std: float | torch.Tensor = 1.0) -> torch.Tensor:
        flat, sign = self._slice(math.prod(shape))
        # one pass into a fresh tensor: the slice is the bank's own memory
        if isinstance(std, float):
            return torch.mul(flat, sign * std).view(shape)
        return torch.mul(flat.view(shape), std).mul_(sign)

    def add_normal(self, t: torch.Tensor, std: float | torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """One pass over the slice, with no copy of it: the sign rides on the scale."""
        flat, sign = self._slice(t.numel())
        if isinstance(std, float):
            return torch.add(t, flat.view(t.shape), alpha=sign * std, out=out)
        return torch.addcmul(t, flat.view(t.shape), std, value=sign, out=out)

    def _slice(self, count: int) -> tuple[torch.Tensor, float]:
        """``count`` values of the bank and a sign: one slice, or several for a draw longer than the bank."""
        size = len(self.bank)
        pieces: list[tuple[torch.Tensor, float]] = []
        for start in range(0, max(count, 1), size):  # an empty draw is one empty slice
            take = min(size, count - start)
            # one draw gives both: the offset in [0, size - take], and the sign from the lowest bit
            pick = int(torch.randint(0, 2 * (size - take + 1), (1,), generator=self.generator))
            pieces.append((self.bank.values[pick // 2:pick // 2 + take], 1.0 if pick % 2 else -1.0))
        if len(pieces) == 1:
            return pieces[0]
        return torch.cat([piece * sign for piece, sign in pieces]), 1.0
