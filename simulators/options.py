"""Options every simulated device shares: topology, where it runs, its noise seed and source."""

import os

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simulators.noise import NoiseMode

STATE_BYTES_PER_PARAMETER = 4 * 4
"""A simulator's float32 copies of each parameter: the target, what was programmed, static draws, a read."""


def physical_memory() -> int:
    """Bytes of memory this machine has."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")



class StrictOptions(BaseModel):
    """Options that refuse unknown names, so a misspelt URL option fails instead of doing nothing."""

    model_config = ConfigDict(extra="forbid")


class SimOptions(StrictOptions):
    """Common options of ``sim://`` devices, each settable in the URL query."""

    layers: list[int] = Field([64, 256, 256], description="widths, input first: 64,256,256 is two layers")
    max_batch: int = Field(65536, gt=0)
    torch_device: str = Field("cpu", description="where the simulation runs: cpu or cuda")
    seed: int = Field(0, ge=0, description="seed of the static, write, read and time noise streams")
    noise: NoiseMode = Field("exact", description="noise source of the write, read and time streams: exact "
                                                  "(fresh draws) or bank (slices of a seeded buffer: faster, "
                                                  "samples reused across draws)")

    @field_validator("layers", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return [int(s) for s in v.split(",") if s.strip()]
        return v

    @field_validator("layers")
    @classmethod
    def _check(cls, v: list[int]) -> list[int]:
        if min(v, default=0) < 1:
            raise ValueError("give positive widths, input first, e.g. 64,256,256")
        return v

    def layer_count(self) -> int:
        """Layers of the network these options describe."""
        return len(self.layers) - 1

    def parameter_count(self) -> int:
        """Parameters of the network these options describe."""
        raise NotImplementedError

    def check_memory(self) -> None:
        """Refuse (ValueError) a network whose simulation this machine's memory cannot hold."""
        needed, have = STATE_BYTES_PER_PARAMETER * self.parameter_count(), physical_memory()
        if needed > have:
            raise ValueError(f"a simulated network of {self.parameter_count():,} parameters needs about "
                             f"{needed / 1e9:,.1f} GB of memory and this machine has {have / 1e9:,.1f} GB; "
                             "use narrower layers")

    @model_validator(mode="after")
    def _some_layer(self) -> "SimOptions":
        if self.layer_count() < 1:
            raise ValueError("give at least two widths, input first, e.g. 64,256,256")
        return self
