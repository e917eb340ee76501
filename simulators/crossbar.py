"""A simulated resistive-crossbar network of dense layers, evaluated in torch.

Weights and biases are normalized to [-1, 1] (a differential conductance pair per weight on a
real array). This module is the ideal, noise-free array; physics effects wrap the matrix-vector
product in :meth:`SimulatedCrossbar._mvm`, the one place every evaluation goes through.
"""

import math
from collections.abc import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from devices.info import Activation, Capabilities, DeviceInfo, LayerSpec, ParamSpec
from devices.interface import (
    Counters,
    Device,
    LayerParams,
    Perturbation,
    check_params,
    clip_to_bounds,
    join_chunks,
    split_chunks,
)

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "hardtanh": torch.nn.functional.hardtanh,
    "identity": lambda z: z,
}


class CrossbarOptions(BaseModel):
    """Options of ``sim://crossbar``, each settable in the URL query."""

    model_config = ConfigDict(extra="forbid")

    layers: list[int] = Field(
        [64, 256, 256], description="widths, input first: 64,256,256 is two layers"
    )
    activation: Activation = "relu"
    max_batch: int = Field(65536, gt=0)
    torch_device: str = Field("cpu", description="where the simulation runs: cpu or cuda")

    @field_validator("layers", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return [int(s) for s in v.split(",") if s.strip()]
        return v

    @field_validator("layers")
    @classmethod
    def _check(cls, v: list[int]) -> list[int]:
        if len(v) < 2 or min(v) < 1:
            raise ValueError("give at least two positive widths, input first, e.g. 64,256,256")
        return v


class SimulatedCrossbar(Device):
    """In-process crossbar network: forward, vectorized perturbation pairs, counters."""

    def __init__(self, options: CrossbarOptions | None = None) -> None:
        self.options = options or CrossbarOptions()
        self._torch_device = torch.device(self.options.torch_device)
        widths = self.options.layers
        self._info = DeviceInfo(
            identity=f"hil simulated crossbar {'x'.join(map(str, widths))}",
            firmware="sim",
            layers=tuple(
                LayerSpec(
                    kind="dense",
                    inputs=n_in,
                    outputs=n_out,
                    activation=self.options.activation,
                    gain=1 / math.sqrt(n_in),
                    params=(
                        ParamSpec(name="weight", shape=(n_out, n_in), low=-1.0, high=1.0),
                        ParamSpec(name="bias", shape=(n_out,), low=-1.0, high=1.0),
                    ),
                )
                for n_in, n_out in zip(widths[:-1], widths[1:])
            ),
            max_batch=self.options.max_batch,
            capabilities=Capabilities(differentiable=True),
        )
        self._counters = Counters()
        self._act = ACTIVATIONS[self.options.activation]

    def info(self) -> DeviceInfo:
        return self._info

    @property
    def counters(self) -> Counters:
        return self._counters

    def forward(self, params: list[LayerParams], x: torch.Tensor) -> list[torch.Tensor]:
        check_params(self._info, params)
        with torch.no_grad():
            acts = self._run(params, x.to(self._torch_device))
        self._counters.forwards += 1
        self._counters.queries += len(acts)
        self._counters.param_writes += len(acts)
        return acts

    def forward_layer(self, layer: int, params: LayerParams, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self._act(self._mvm(layer, params["weight"], params["bias"], x))
        self._counters.queries += 1
        self._counters.param_writes += 1
        return out

    def perturbed_pairs(
        self, layer: int, params: LayerParams, x: torch.Tensor, perturbation: Perturbation
    ) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self._info.layers[layer]
        n_dir = len(perturbation.seeds)
        with torch.no_grad():
            x = x.to(self._torch_device)
            base = join_chunks(spec, params).to(self._torch_device)
            v = perturbation.vectors(spec, self._torch_device)
            reach = perturbation.eps * (1.0 if perturbation.distribution == "rademacher" else _largest_magnitude(v))
            if _largest_magnitude(base) + reach <= 1.0 + 1e-6:  # float32 slack of 0.99 + 0.01
                # Nothing clips, and the array's product is linear in its conductances:
                # (W +- eps V) x = W x +- eps V x, so P direction products serve all 2P queries.
                along = split_chunks(spec, v)
                z0 = self._mvm(layer, params["weight"], params["bias"], x)
                dz = self._mvm(layer, along["weight"], along["bias"], x).mul_(perturbation.eps)
                z = torch.cat([z0 + dz, z0 - dz])
            else:
                step = perturbation.eps * v
                shifted = clip_to_bounds(spec, split_chunks(spec, torch.cat([base + step, base - step])))
                z = self._mvm(layer, shifted["weight"], shifted["bias"], x)
            out = self._act(z)
        self._counters.queries += 2 * n_dir
        self._counters.param_writes += 2 * n_dir
        self._counters.perturbation_batches += 1
        return out[:n_dir], out[n_dir:]

    def differentiable_layer(self, layer: int, params: LayerParams, x: torch.Tensor) -> torch.Tensor:
        """Autograd forward of one layer, for the simulator-only baselines (``mf-ad``, ``bp``)."""
        self._counters.queries += 1
        return self._act(self._mvm(layer, params["weight"], params["bias"], x.to(self._torch_device)))

    def _run(self, params: list[LayerParams], x: torch.Tensor) -> list[torch.Tensor]:
        acts = []
        a = x
        for i, p in enumerate(params):
            a = self._act(self._mvm(i, p["weight"], p["bias"], a))
            acts.append(a)
        return acts

    def _mvm(self, layer: int, weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``gain * x W^T + b``; a leading batch of weight sets gives (K, batch, out).

        Weights use the array's whole range, [-1, 1]; the periphery scales column sums by the
        layer's gain (1/sqrt(inputs)) and adds the bias digitally.
        """
        gain = self._info.layers[layer].gain
        if weight.dim() == 3:
            return torch.baddbmm(bias.unsqueeze(1), x.expand(weight.shape[0], *x.shape),
                                 weight.transpose(1, 2), alpha=gain)
        return torch.addmm(bias, x, weight.T, alpha=gain)


def _largest_magnitude(t: torch.Tensor) -> float:
    low, high = torch.aminmax(t)
    return max(-low.item(), high.item())
