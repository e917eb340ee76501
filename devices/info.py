"""What a device says about itself: topology, parameter specs, limits, capabilities."""

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Activation = Literal["relu", "tanh", "hardtanh", "identity"]


class ParamSpec(BaseModel):
    """One named parameter array of a layer, in the device's own logical units."""

    model_config = ConfigDict(frozen=True)

    name: str
    shape: tuple[int, ...]
    low: float = Field(description="smallest value the device accepts")
    high: float = Field(description="largest value the device accepts")
    periodic: bool = Field(False, description="values wrap (phases) instead of clipping")
    resolution: float = Field(0.0, ge=0.0, description="smallest programmable step, 0 if continuous")
    write_noise: float = Field(0.0, ge=0.0, description="typical sigma a write adds, in these units")


class ConvShape(BaseModel):
    """Geometry of a conv layer: one array of ``in_channels * kernel**2`` rows (a patch) and
    ``out_channels`` columns, read once per image position ("same" zero padding, stride 1),
    then pooled over ``pool`` x ``pool`` windows. Activations are flattened channel-major
    (channel, row, column), so each output channel owns a contiguous block of outputs.
    """

    model_config = ConfigDict(frozen=True)

    in_channels: int = Field(gt=0)
    out_channels: int = Field(gt=0)
    height: int = Field(gt=0, description="input image rows")
    width: int = Field(gt=0, description="input image columns")
    kernel: int = Field(gt=0, description="odd kernel size (same padding keeps height and width)")
    pool: int = Field(1, gt=0, description="pooling window and stride (1: none)")
    pooling: Literal["avg", "max"] = "avg"

    @model_validator(mode="after")
    def _check(self) -> "ConvShape":
        if self.kernel % 2 == 0:
            raise ValueError(f"conv kernel must be odd for same padding, got {self.kernel}")
        if self.height % self.pool or self.width % self.pool:
            raise ValueError(f"pool {self.pool} does not divide the {self.height}x{self.width} map; "
                             f"pick a pool that divides both sides, or none ({self.out_channels}c{self.kernel})")
        return self

    @property
    def patch(self) -> int:
        """Array rows: inputs of one patch."""
        return self.in_channels * self.kernel**2

    @property
    def positions(self) -> int:
        """Patches read per image."""
        return self.height * self.width

    @property
    def out_height(self) -> int:
        return self.height // self.pool

    @property
    def out_width(self) -> int:
        return self.width // self.pool


class LayerSpec(BaseModel):
    """One layer of the device's network."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["dense", "mesh", "conv"]
    inputs: int = Field(gt=0)
    outputs: int = Field(gt=0)
    activation: Activation
    gain: float = Field(
        1.0, gt=0, description="the periphery scales the array's column sums by this before the bias"
    )
    params: tuple[ParamSpec, ...]
    spliceable: bool = Field(
        True,
        description="each chunk owns its own outputs, so chunks can be perturbed "
        "together and their activations spliced on the host",
    )

    chunks: int | None = Field(
        None, gt=0, description="equal parameter chunks; default one per output unit (its row)"
    )
    conv: ConvShape | None = Field(None, description="geometry of a conv layer (kind conv only)")

    @model_validator(mode="after")
    def _check_conv(self) -> "LayerSpec":
        if (self.kind == "conv") != (self.conv is not None):
            raise ValueError("a conv layer, and only a conv layer, gives its conv geometry")
        if self.conv is not None:
            c = self.conv
            want = (c.in_channels * c.height * c.width, c.out_channels * c.out_height * c.out_width)
            if (self.inputs, self.outputs) != want or self.n_chunks() != c.out_channels:
                raise ValueError(f"conv layer: inputs, outputs and chunks must be {want} and "
                                 f"{c.out_channels} (one chunk per output channel)")
        return self

    @property
    def has_bias(self) -> bool:
        """Whether the layer has a ``bias`` array (one value per chunk) that a bias perturbation moves."""
        return any(p.name == "bias" for p in self.params)

    def n_chunks(self) -> int:
        """How many chunks the layer's parameters split into."""
        return self.chunks or self.outputs

    def chunk_outputs(self) -> int:
        """Outputs each chunk owns (a conv channel owns its whole pooled map)."""
        return self.outputs // self.n_chunks()

    def chunk_size(self) -> int:
        """Number of parameters in one chunk (its share of every array)."""
        return sum(math.prod(p.shape) // self.n_chunks() for p in self.params)


class Capabilities(BaseModel):
    model_config = ConfigDict(frozen=True)

    layer_input_injection: bool = Field(
        True, description="a layer can be evaluated on an input the host supplies"
    )
    seeded_perturbations: bool = Field(
        True, description="the device generates perturbation directions from seeds itself"
    )
    bias_perturbation: bool = Field(
        False, description="the device moves a layer's bias array alone by +-eps (protocol distribution 3) "
                           "without writing its array"
    )
    differentiable: bool = Field(
        False, description="simulator only: exposes an autograd forward for baselines"
    )


class DeviceInfo(BaseModel):
    """Identity, topology, limits and capabilities of one device."""

    model_config = ConfigDict(frozen=True)

    identity: str
    firmware: str = ""
    protocol_version: int = 1
    layers: tuple[LayerSpec, ...]
    max_batch: int = Field(gt=0)
    capabilities: Capabilities = Capabilities()

