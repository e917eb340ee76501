"""Seeded noise streams: static, write, read and time.

Every effect draws from its own generator, keyed by (seed, stream, effect), so the same seed
reproduces a run bit for bit and switching one effect off leaves every other effect's draws
unchanged.
"""

import zlib

import numpy as np
import torch

STREAMS = ("static", "write", "read", "time")


class NoiseStreams:
    """One torch generator per (stream, effect), created on first use."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generators: dict[tuple[str, str], torch.Generator] = {}

    def generator(self, stream: str, effect: str) -> torch.Generator:
        if stream not in STREAMS:
            raise ValueError(f"unknown noise stream {stream!r}; streams are {STREAMS}")
        key = (stream, effect)
        if key not in self._generators:
            entropy = [self.seed, STREAMS.index(stream), zlib.crc32(effect.encode())]
            state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint64)
            self._generators[key] = torch.Generator().manual_seed(int(state[0] >> 1))
        return self._generators[key]

    def normal(self, stream: str, effect: str, shape: tuple[int, ...], std: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Gaussian draws (on the CPU, so the stream is the same on every machine)."""
        draws = torch.randn(shape, generator=self.generator(stream, effect))
        return draws if isinstance(std, float) and std == 1.0 else draws.mul_(std)

    def uniform(self, stream: str, effect: str, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator(stream, effect))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{s}/{e}": g.get_state() for (s, e), g in self._generators.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore every stream to ``state``; a stream it does not hold starts afresh when next used."""
        self._generators = {}
        for key, value in state.items():
            stream, effect = key.split("/", 1)
            self.generator(stream, effect).set_state(value)
