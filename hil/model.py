"""Mono-Forward on a device: device-side layer parameters plus a host-side projection per layer.

Layer ``l`` turns its input into activations ``a_l`` on the device; the host projects them to
class goodness ``G_l = a_l M_l^T`` and trains each layer on its own softmax cross-entropy.
Prediction uses the last layer's goodness, or the sum over layers (cumulative, the headline).
"""

import math

import torch

from devices.info import DeviceInfo
from devices.interface import LayerParams, clip_to_bounds


class MonoForward:
    """The trainable state: device parameters and host projections, as optimizer leaves."""

    def __init__(self, params: list[LayerParams], projections: list[torch.Tensor]) -> None:
        self.params = params
        self.projections = projections

    @classmethod
    def initialise(cls, info: DeviceInfo, classes: int, seed: int, device: str = "cpu") -> "MonoForward":
        """Weights uniform over their whole bounds, biases 0, M U(+-1/sqrt(width)).

        Devices scale a layer's column sums by ``gain`` (1/sqrt(fan_in) on a crossbar), so
        weights spanning the array's range give unit-scale pre-activations and the best
        signal-to-noise ratio on analog hardware.
        """
        gen = torch.Generator().manual_seed(seed)
        params, projections = [], []
        for spec in info.layers:
            layer: LayerParams = {}
            for p in spec.params:
                if p.name == "bias":
                    value = torch.zeros(p.shape)
                else:
                    value = p.low + torch.rand(p.shape, generator=gen) * (p.high - p.low)
                layer[p.name] = value
            params.append({k: v.to(device).requires_grad_() for k, v in clip_to_bounds(spec, layer).items()})
            bound = 1 / math.sqrt(spec.outputs)
            m = (torch.rand(classes, spec.outputs, generator=gen) * 2 - 1) * bound
            projections.append(m.to(device).requires_grad_())
        return cls(params, projections)

    def tensors(self) -> list[torch.Tensor]:
        """Every trainable tensor, in a fixed order (for the optimizer and checkpoints)."""
        return [t for layer in self.params for t in layer.values()] + self.projections

    def device_params(self) -> list[LayerParams]:
        """Parameters as sent to the device (detached)."""
        return [{k: v.detach() for k, v in layer.items()} for layer in self.params]

    def clip_(self, info: DeviceInfo, margin: float = 0.0) -> None:
        """Put every device parameter back inside its bounds, ``margin`` away from each edge.

        A margin of ``eps`` keeps every +-eps perturbation inside the bounds too, so queries
        never need clipping and central differences stay unbiased. Periodic values wrap.
        """
        with torch.no_grad():
            for spec, layer in zip(info.layers, self.params):
                for name, value in clip_to_bounds(spec, layer, margin).items():
                    layer[name].copy_(value)

    def goodness(self, acts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Class goodness ``a_l M_l^T`` of every layer."""
        return [a @ m.T for a, m in zip(acts, self.projections)]

    def predict(self, acts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted classes by the final layer and by cumulative goodness."""
        goodness = self.goodness(acts)
        return goodness[-1].argmax(-1), torch.stack(goodness).sum(0).argmax(-1)

    def state_dict(self) -> dict[str, object]:
        return {"tensors": [t.detach().cpu().clone() for t in self.tensors()]}

    def load_state_dict(self, state: dict[str, object]) -> None:
        with torch.no_grad():
            for t, saved in zip(self.tensors(), state["tensors"]):  # type: ignore[arg-type]
                t.copy_(saved)
