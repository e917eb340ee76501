"""What a device says about itself: topology, parameter specs, limits, capabilities."""

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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


class LayerSpec(BaseModel):
    """One layer of the device's network."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["dense", "mesh"]
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

    def n_chunks(self) -> int:
        """How many chunks the layer's parameters split into."""
        return self.chunks or self.outputs

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

