"""Seeded noise streams: static, write, read and time, each drawn from a noise source.

Every effect draws from its own generator, keyed by (seed, stream, effect), so the same seed
reproduces a run bit for bit and switching one effect off leaves every other effect's draws
unchanged. The ``noise`` option picks the source behind the write, read and time streams:
``exact`` (the default) draws every value fresh from the effect's generator; ``bank`` slices a
seeded buffer of standard normals at offsets and signs drawn from that generator
(:mod:`simulators.bank`). Static draws (faults, per-device variation) are exact in both modes.
"""

import zlib
from typing import Literal, Protocol

import numpy as np
import torch

from simulators.bank import BankNoise, NoiseBank

STREAMS = ("static", "write", "read", "time")
NoiseMode = Literal["exact", "bank"]


class NoiseSource(Protocol):
    """Where an effect's Gaussian draws come from."""

    def normal(self, shape: tuple[int, ...], std: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Draws of N(0, std^2) in a fresh tensor the caller may overwrite."""
        ...

    def add_normal(self, t: torch.Tensor, std: float | torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``t`` + N(0, std^2) per value (``std`` a float or broadcasting to ``t``), into ``out`` or a
        fresh tensor."""
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

    def add_normal(self, t: torch.Tensor, std: float | torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        noise = self.normal(tuple(t.shape))
        if out is None:
            out = noise  # the draws' own fresh buffer
        if isinstance(std, float):
            return torch.add(t, noise, alpha=std, out=out)
        return torch.addcmul(t, noise, std, out=out)

    def uniform(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator).to(self.device)


def derive_seed(*entropy: int) -> int:
    """A torch seed from integers, well mixed (neighbouring seeds give unrelated streams)."""
    state = np.random.SeedSequence(list(entropy)).generate_state(2, dtype=np.uint64)
    return int(state[0] >> 1)


class NoiseStreams:
    """One torch generator per (stream, effect), created on first use, behind the chosen source."""

    def __init__(self, seed: int, mode: NoiseMode = "exact", device: torch.device | str = "cpu") -> None:
        self.seed = seed
        self.mode = mode
        self.device = torch.device(device)
        self._generators: dict[tuple[str, str], torch.Generator] = {}
        self._bank: NoiseBank | None = None

    def generator(self, stream: str, effect: str) -> torch.Generator:
        if stream not in STREAMS:
            raise ValueError(f"unknown noise stream {stream!r}; streams are {STREAMS}")
        key = (stream, effect)
        if key not in self._generators:
            self._generators[key] = torch.Generator().manual_seed(self._initial_seed(stream, effect))
        return self._generators[key]

    def _initial_seed(self, stream: str, effect: str) -> int:
        return derive_seed(self.seed, STREAMS.index(stream), zlib.crc32(effect.encode()))

    def source(self, stream: str, effect: str) -> NoiseSource:
        """The draws of ``effect`` on ``stream``: exact, or from the bank in bank mode (never static draws)."""
        generator = self.generator(stream, effect)
        if self.mode == "exact" or stream == "static":
            return ExactNoise(generator, self.device)
        if self._bank is None:
            # keyed apart from every stream's generator (those are keyed by three integers)
            self._bank = NoiseBank(derive_seed(self.seed, len(STREAMS)), device=self.device)
        return BankNoise(self._bank, generator)

    def static(self, effect: str) -> ExactNoise:
        """Draws made once (faults, per-device variation): exact in every mode, on the CPU."""
        return ExactNoise(self.generator("static", effect))

    def normal(self, stream: str, effect: str, shape: tuple[int, ...], std: float | torch.Tensor = 1.0) -> torch.Tensor:
        return self.source(stream, effect).normal(shape, std)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every generator's state; a bank is rebuilt from the seed, so it is not stored."""
        return {f"{s}/{e}": g.get_state() for (s, e), g in self._generators.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore every stream to ``state``; a stream it does not hold starts afresh.

        Generators are reset in place: the effects keep the sources that wrap them.
        """
        for (stream, effect), generator in self._generators.items():
            if f"{stream}/{effect}" not in state:
                generator.manual_seed(self._initial_seed(stream, effect))
        for key, value in state.items():
            stream, effect = key.split("/", 1)
            self.generator(stream, effect).set_state(value)
