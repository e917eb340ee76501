"""Options every simulated device shares: topology, where it runs, its noise seed and source."""

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simulators.noise import NoiseMode


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

    @model_validator(mode="after")
    def _some_layer(self) -> "SimOptions":
        if self.layer_count() < 1:
            raise ValueError("give at least two widths, input first, e.g. 64,256,256")
        return self
