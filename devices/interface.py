"""The device contract every backend implements (simulator, serial, VISA).

Parameters travel as one ``dict[str, Tensor]`` per layer, in the device's logical units and in
the shapes its :class:`~devices.info.ParamSpec` declares. A *query* is one evaluation of one layer
on one input batch under one parameter setting: a full forward of an L-layer network costs L
queries, a perturbation pair batch with P directions costs 2P.
"""

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from devices.directions import Direction, directions
from devices.errors import DeviceConfigError
from devices.info import DeviceInfo, LayerSpec

LayerParams = dict[str, torch.Tensor]


@dataclass
class Counters:
    """Running totals a device keeps about the work it did."""

    queries: int = 0
    forwards: int = 0
    perturbation_batches: int = 0
    param_writes: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    device_seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class Perturbation:
    """P directions named by seeds, applied at +eps and -eps.

    ``chunk`` restricts every direction to one chunk (one output unit), for devices whose chunks
    cannot be spliced and for checking splicing against the one-chunk-at-a-time estimate. The
    ``bias`` direction moves only the layer's bias array, by eps everywhere; its seeds are unused.
    """

    seeds: tuple[int, ...]
    eps: float
    distribution: Direction = "rademacher"
    chunk: int | None = None

    def vectors(self, layer: LayerSpec, device: torch.device | str = "cpu") -> torch.Tensor:
        """The directions as (P, chunks, chunk_size), zero outside ``chunk`` when one is set."""
        if self.distribution == "bias":
            v = bias_direction(layer, device).expand(len(self.seeds), -1, -1)
        else:
            v = directions(self.seeds, layer.n_chunks(), layer.chunk_size(), self.distribution,
                           device=device)
        if self.chunk is not None:
            mask = torch.zeros(layer.n_chunks(), 1, device=v.device, dtype=v.dtype)
            mask[self.chunk] = 1
            v = v * mask
        return v


def bias_direction(layer: LayerSpec, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, chunks, chunk_size): 1 on every element of the layer's ``bias`` array, 0 elsewhere."""
    if not layer.has_bias:
        raise DeviceConfigError(f"a {layer.kind} layer without a 'bias' array has no bias direction")
    zeros = {p.name: torch.full(p.shape, float(p.name == "bias"), device=device) for p in layer.params}
    return join_chunks(layer, zeros).unsqueeze(0)


def split_chunks(layer: LayerSpec, flat: torch.Tensor) -> LayerParams:
    """Turn chunk-major vectors (..., chunks, chunk_size) into the layer's named arrays."""
    out: LayerParams = {}
    start = 0
    for spec in layer.params:
        width = math.prod(spec.shape) // layer.n_chunks()
        part = flat[..., start:start + width]
        out[spec.name] = part.reshape(*flat.shape[:-2], *spec.shape)
        start += width
    return out


def join_chunks(layer: LayerSpec, params: LayerParams) -> torch.Tensor:
    """Inverse of :func:`split_chunks`: named arrays to (chunks, chunk_size)."""
    return torch.cat([params[s.name].reshape(layer.n_chunks(), -1) for s in layer.params], dim=-1)


class Device(ABC):
    """A network whose forward pass runs on hardware (or a simulation of it)."""

    @abstractmethod
    def info(self) -> DeviceInfo:
        """Describe identity, topology, parameter specs, limits and capabilities."""

    @abstractmethod
    def forward(self, params: list[LayerParams], x: torch.Tensor) -> list[torch.Tensor]:
        """Measure every layer's activations for input batch ``x`` under ``params``."""

    @property
    @abstractmethod
    def counters(self) -> Counters:
        """Return the running totals of queries, writes, bytes and device time."""

    def perturbed_pairs(
        self, layer: int, params: LayerParams, x: torch.Tensor, perturbation: Perturbation
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Measure layer ``layer`` on its input ``x`` at ``params +- eps * v`` for every direction.

        Returns ``(plus, minus)``, each shaped (P, batch, outputs). This default builds the
        perturbed parameters on the host and sends each through :meth:`forward_layer`; devices
        that generate directions from seeds, or evaluate batches vectorized, override it.
        """
        spec = self.info().layers[layer]
        base = join_chunks(spec, params)
        v = perturbation.vectors(spec, base.device)
        results: list[torch.Tensor] = []
        for sign in (1.0, -1.0):
            for p in range(len(perturbation.seeds)):
                shifted = clip_to_bounds(spec, split_chunks(spec, base + sign * perturbation.eps * v[p]))
                results.append(self.forward_layer(layer, shifted, x))
        stacked = torch.stack(results)
        return stacked[: len(perturbation.seeds)], stacked[len(perturbation.seeds):]

    def forward_layer(self, layer: int, params: LayerParams, x: torch.Tensor) -> torch.Tensor:
        """Measure one layer on an injected input ``x``; needs ``layer_input_injection``."""
        raise NotImplementedError(f"{type(self).__name__} does not evaluate single layers")

    def state_dict(self) -> dict[str, Any] | None:
        """Internal state a resumed run needs to continue bit for bit (simulators); hardware: None."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def close(self) -> None:
        """Release the device (links, ports). Idempotent."""

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@runtime_checkable
class Differentiable(Protocol):
    """Simulator-only: an autograd forward used by the ``mf-ad`` and ``bp`` baselines."""

    def differentiable_layer(self, layer: int, params: LayerParams, x: torch.Tensor) -> torch.Tensor:
        """One layer's activations with the autograd graph kept."""


def clip_to_bounds(layer: LayerSpec, params: LayerParams, margin: float = 0.0) -> LayerParams:
    """Clip every array into its declared bounds, ``margin`` inside each edge (wrap periodic ones)."""
    out: LayerParams = {}
    for spec in layer.params:
        value = params[spec.name]
        if spec.periodic:
            span = spec.high - spec.low
            out[spec.name] = torch.remainder(value - spec.low, span) + spec.low
        else:
            out[spec.name] = value.clamp(spec.low + margin, spec.high - margin)
    return out


def check_params(info: DeviceInfo, params: list[LayerParams]) -> None:
    """Refuse parameters of the wrong layer count, names, shapes or outside bounds."""
    if len(params) != len(info.layers):
        raise DeviceConfigError(f"device has {len(info.layers)} layers, got params for {len(params)}")
    for i, (spec, layer) in enumerate(zip(info.layers, params)):
        check_layer_params(i, spec, layer)


def check_layer_params(index: int, spec: LayerSpec, params: LayerParams) -> None:
    """Refuse one layer's parameters of the wrong names or shapes, or outside bounds."""
    for p in spec.params:
        if p.name not in params:
            raise DeviceConfigError(f"layer {index}: missing parameter {p.name!r}")
        value = params[p.name]
        if tuple(value.shape) != p.shape:
            raise DeviceConfigError(f"layer {index} {p.name}: shape {tuple(value.shape)}, device expects {p.shape}")
        if p.periodic:
            continue
        low, high = (float(v) for v in torch.aminmax(value))  # NaN propagates and fails both tests
        if not (p.low <= low and high <= p.high):
            raise DeviceConfigError(f"layer {index} {p.name}: values outside [{p.low}, {p.high}] "
                                    f"(min {low:.4g}, max {high:.4g})")
