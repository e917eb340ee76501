"""Seeded perturbation directions that a host and a microcontroller generate identically.

A direction is named by a 32-bit seed. Its elements come from a counter-based generator: word
``k`` of seed ``s`` is ``fmix32((fmix32(s) + k * 0x9E3779B9) mod 2**32)`` (MurmurHash3's
finalizer), so any element can be computed on its own, in any order, with 32-bit integer
arithmetic only. The host evaluates the same formula vectorized in torch.

Distributions (``n`` is the chunk size, every one has ``E[v v^T] = I``):

- ``rademacher``: element ``j`` is +1 if bit ``j mod 32`` of word ``j // 32`` is set, else -1.
- ``gaussian``: Box-Muller, ``u1 = (word(2j) + 0.5) / 2**32``, ``u2 = (word(2j+1) + 0.5) / 2**32``,
  element ``j = sqrt(-2 ln u1) * cos(2 pi u2)``.
- ``sphere``: the gaussian vector of each chunk scaled to norm ``sqrt(n)``.

Elements are laid out chunk by chunk: element ``j = chunk * n + position``.

Besides these random distributions a perturbation may move only a layer's ``bias`` array, every
element by the same step (:data:`DIRECTIONS`' ``bias``, protocol distribution 3): the direction
of an activity-space estimate, built from the layer's layout by
:meth:`devices.interface.Perturbation.vectors` since it needs no seed.
"""

import functools
import math
from typing import Literal

import torch

Distribution = Literal["rademacher", "gaussian", "sphere"]
DISTRIBUTIONS: tuple[Distribution, ...] = ("rademacher", "gaussian", "sphere")
Direction = Literal["rademacher", "gaussian", "sphere", "bias"]
DIRECTIONS: tuple[Direction, ...] = (*DISTRIBUTIONS, "bias")
"""Every kind of direction a perturbation query names, in the order of their wire codes."""

MASK32 = 0xFFFFFFFF
GOLDEN32 = 0x9E3779B9


def fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3 finalizer on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & MASK32
    return x ^ (x >> 16)


def words(seeds: torch.Tensor, count: int) -> torch.Tensor:
    """Words 0..count-1 of every seed: int64 tensor of shape (len(seeds), count)."""
    key = fmix32(seeds.to(torch.int64).reshape(-1, 1) & MASK32)
    counter = torch.arange(count, dtype=torch.int64, device=seeds.device).reshape(1, -1)
    return fmix32((key + counter * GOLDEN32) & MASK32)


def directions(
    seeds: tuple[int, ...] | list[int],
    chunks: int,
    chunk_size: int,
    distribution: Distribution = "rademacher",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Directions for every seed, shaped (P, chunks, chunk_size).

    Memoized: a device and the host that drives it ask for the same directions in one step. The
    returned tensor is shared, so never modify it in place.
    """
    return _directions(tuple(int(s) for s in seeds), chunks, chunk_size, distribution, dtype,
                       torch.device(device))


@functools.lru_cache(maxsize=4)
def _directions(
    seed_values: tuple[int, ...],
    chunks: int,
    chunk_size: int,
    distribution: Distribution,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    seeds = torch.tensor(seed_values, dtype=torch.int64, device=device)
    n = chunks * chunk_size
    if distribution == "rademacher":
        # the int32 view of each word, read as 4 bytes least significant first (little-endian)
        octets = words(seeds, (n + 31) // 32).to(torch.int32).view(torch.uint8).to(torch.int64)
        signs = torch.index_select(_sign_table(dtype, seeds.device), 0, octets.reshape(-1))
        v = signs.reshape(len(seeds), -1)[:, :n]
    elif distribution in ("gaussian", "sphere"):
        w = words(seeds, 2 * n).to(torch.float64).reshape(len(seeds), n, 2)
        u = (w + 0.5) / 2.0**32
        v = torch.sqrt(-2.0 * torch.log(u[..., 0])) * torch.cos(2 * math.pi * u[..., 1])
        v = v.to(dtype)
    else:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}")
    v = v.reshape(len(seeds), chunks, chunk_size)
    if distribution == "sphere":
        v = v * (math.sqrt(chunk_size) / v.norm(dim=-1, keepdim=True))
    return v


def _sign_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Row b holds the 8 signs (+1 for a set bit, least significant first) of byte value b."""
    bits = (torch.arange(256, device=device).unsqueeze(-1) >> torch.arange(8, device=device)) & 1
    return bits.to(dtype) * 2 - 1
