"""Options of ``sim://crossbar``: the physics (every effect's slice) and the network's topology."""

import math
from typing import Literal

from pydantic import Field

from devices.info import Activation, ConvShape, LayerSpec, ParamSpec
from simulators.conv import parse_convs, parse_image
from simulators.crossbar.array import IRDropOptions
from simulators.crossbar.clock import TimingOptions
from simulators.crossbar.drift import DriftOptions
from simulators.crossbar.faults import StuckOptions
from simulators.crossbar.inputs import DacOptions
from simulators.crossbar.programming import ProgrammingNoise, ProgrammingNoiseOptions
from simulators.crossbar.readout import AdcOptions, OutputNoiseOptions, ReadNoiseOptions
from simulators.options import SimOptions


# pydantic lists inherited fields from the last base to the first: the bases are in reverse
# pipeline order so that the options read in pipeline order (DAC first, timing last); tile_rows
# and on_off_ratio come with the effects that read them (IR drop, read noise; the write effects)
class CrossbarPhysics(TimingOptions, DriftOptions, StuckOptions, ProgrammingNoiseOptions,
                      AdcOptions, OutputNoiseOptions, ReadNoiseOptions, IRDropOptions, DacOptions):
    """Every effect's options together: what a crossbar preset sets (all off by default)."""


class CrossbarTopology(SimOptions):
    activation: Activation = "relu"
    conv: str = Field("", description="conv layers before the dense ones, e.g. 16c3p2,32c3p2 "
                                      "(channels c kernel, optional p pool)")
    image: str = Field("", description="input image CxHxW for conv layers (default: a square of 1 or 3 channels)")
    pooling: Literal["avg", "max"] = Field("avg", description="pooling of conv layers")


class CrossbarOptions(CrossbarPhysics, CrossbarTopology):
    """Options of ``sim://crossbar``: topology and physics, each settable in the URL query."""

    def layer_count(self) -> int:
        return len(self.layers) - 1 + len([t for t in self.conv.split(",") if t.strip()])

    def parameter_count(self) -> int:
        """Weights and biases of every layer."""
        return sum(math.prod(p.shape) for spec in self.layer_specs() for p in spec.params)

    def layer_specs(self) -> list[LayerSpec]:
        """Conv layers first (from ``conv`` on ``image``), then dense layers of ``layers[1:]``."""
        specs = []
        width = self.layers[0]
        if self.conv.strip():
            for shape in parse_convs(self.conv, parse_image(self.image, width), self.pooling):
                specs.append(_layer(self, "conv", shape.patch, shape.out_channels,
                                    width, shape.out_channels * shape.out_height * shape.out_width, shape))
                width = specs[-1].outputs
        for n_out in self.layers[1:]:
            specs.append(_layer(self, "dense", width, n_out, width, n_out))
            width = n_out
        return specs


def _layer(opts: CrossbarOptions, kind: str, rows: int, columns: int, inputs: int, outputs: int,
           conv: ConvShape | None = None) -> LayerSpec:
    """A layer whose array has ``rows`` inputs and ``columns`` outputs (weights in [-1, 1])."""
    return LayerSpec(
        kind=kind, inputs=inputs, outputs=outputs, activation=opts.activation, gain=1 / math.sqrt(rows),
        chunks=columns if conv else None, conv=conv,  # type: ignore[arg-type]
        params=(
            ParamSpec(name="weight", shape=(columns, rows), low=-1.0, high=1.0,
                      write_noise=ProgrammingNoise.typical_sigma(opts)),
            ParamSpec(name="bias", shape=(columns,), low=-1.0, high=1.0),
        ),
    )
