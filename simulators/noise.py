"""Seeded noise streams: static, write, read and time, each drawn from a noise source.

Every effect draws from its own generator, keyed by (seed, stream, effect), so the same seed
reproduces a run bit for bit and switching one effect off leaves every other effect's draws
unchanged. Effects draw through a :class:`NoiseSource`.
"""

import zlib
from typing import Protocol

import numpy as np
import torch

STREAMS = ("static", "write", "read", "time")


class NoiseSource(Protocol):
    """Where an effect's Gaussian draws come from."""

    def normal(self, shape: tuple[int, ...], std: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Draws of N(0, std^2) in a fresh tensor the caller may overwrite."""
        ...


class ExactNoise:
    """Every value drawn fresh from one torch generator on the CPU (the same stream on every machine),
    then moved to ``device``."""

    def __init__(self, generator: torch.Generator, device: torch.device | str = "cpu") -> None:
        self.generator = generator
        self.device = torch.device(device)

    def normal(self, shape: tuple[int, ...], std: float | torch.Tensor = 1.0) -> torch.Tensor:
        draws = torch.randn(shape, generator=self.generator).to(self.device)
        return draws if isinstance(std, float) and std == 1.0 else draws.mul_(std)

    def uniform(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator).to(self.device)


def derive_seed(*entropy: int) -> int:
    """A torch seed from integers, well mixed (neighbouring seeds give unrelated streams)."""
    state = np.random.SeedSequence(list(entropy)).generate_state(2, dtype=np.uint64)
    return int(state[0] >> 1)


class NoiseStreams:
    """One torch generator per (stream, effect), created on first use."""

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.seed = seed
        self.device = torch.device(device)
        self._generators: dict[tuple[str, str], torch.Generator] = {}

    def generator(self, stream: str, effect: str) -> torch.Generator:
        if stream not in STREAMS:
            raise ValueError(f"unknown noise stream {stream!r}; streams are {STREAMS}")
        key = (stream, effect)
        if key not in self._generators:
            entropy = (self.seed, STREAMS.index(stream), zlib.crc32(effect.encode()))
            self._generators[key] = torch.Generator().manual_seed(derive_seed(*entropy))
        return self._generators[key]

    def source(self, stream: str, effect: str) -> NoiseSource:
        """The draws of ``effect`` on ``stream``, on the device."""
        return ExactNoise(self.generator(stream, effect), self.device)

    def static(self, effect: str) -> ExactNoise:
        """Draws made once (faults, per-device variation), on the CPU."""
        return ExactNoise(self.generator("static", effect))

    def normal(self, stream: str, effect: str, shape: tuple[int, ...], std: float | torch.Tensor = 1.0) -> torch.Tensor:
        return self.source(stream, effect).normal(shape, std)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{s}/{e}": g.get_state() for (s, e), g in self._generators.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            stream, effect = key.split("/", 1)
            self.generator(stream, effect).set_state(value)
