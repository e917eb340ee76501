"""Mono-Forward on a device: device-side layer parameters plus a host-side projection per layer.

Layer ``l`` turns its input into activations ``a_l`` on the device; the host projects them to
class goodness ``G_l = a_l M_l^T`` and trains each layer on its own softmax cross-entropy
(or, with the ``prototype`` objective, scores them by cosine to fixed class prototypes; see
:mod:`hil.goodness`). Prediction uses the last layer's goodness, or the sum over layers
(cumulative, the headline).

A conv layer's activations are first reduced, channel by channel, by a fixed random projection of
its pooled map to ``features`` values (seeded, never trained), so M and the estimate stay small and
each output channel (a chunk) still owns its own features.
"""

import math

import torch

from devices.info import DeviceInfo
from devices.interface import LayerParams, clip_to_bounds
from hil.goodness import Goodness, PrototypeObjective, SoftmaxObjective, simplex_prototypes


class MonoForward:
    """The trainable state: device parameters and host projections, as optimizer leaves."""

    def __init__(self, params: list[LayerParams], projections: list[torch.Tensor],
                 feature_maps: list[torch.Tensor | None] | None = None, goodness: Goodness = "softmax",
                 margin: float = 0.3) -> None:
        self.params = params
        self.projections = projections
        """Per layer: M (trained) for the softmax objective, the fixed unit prototypes for ``prototype``."""
        self.feature_maps = feature_maps or [None] * len(params)
        self.goodness_kind = goodness
        self.margin = margin

    @classmethod
    def initialise(cls, info: DeviceInfo, classes: int, seed: int, device: str = "cpu",
                   features: int = 10, goodness: Goodness = "softmax", margin: float = 0.3) -> "MonoForward":
        """Weights uniform over their whole bounds, biases 0, M U(+-1/sqrt(width)) or simplex prototypes.

        Devices scale a layer's column sums by ``gain`` (1/sqrt(fan_in) on a crossbar), so
        weights spanning the array's range give unit-scale pre-activations and the best
        signal-to-noise ratio on analog hardware.
        """
        gen = torch.Generator().manual_seed(seed)
        maps = feature_maps(info, features, seed, device)
        params, projections = [], []
        for spec, fmap in zip(info.layers, maps):
            layer: LayerParams = {}
            for p in spec.params:
                if p.name == "bias":
                    value = torch.zeros(p.shape)
                else:
                    value = p.low + torch.rand(p.shape, generator=gen) * (p.high - p.low)
                layer[p.name] = value
            params.append({k: v.to(device).requires_grad_() for k, v in clip_to_bounds(spec, layer).items()})
            width = spec.outputs if fmap is None else spec.n_chunks() * fmap.shape[1]
            if goodness == "prototype":
                projections.append(simplex_prototypes(classes, width, gen).to(device))
            else:
                bound = 1 / math.sqrt(width)
                m = (torch.rand(classes, width, generator=gen) * 2 - 1) * bound
                projections.append(m.to(device).requires_grad_())
        return cls(params, projections, maps, goodness, margin)

    @property
    def trains_projection(self) -> bool:
        """Whether the host projections are trained (softmax) or fixed prototypes."""
        return self.goodness_kind == "softmax"

    def tensors(self) -> list[torch.Tensor]:
        """Every trainable tensor, in a fixed order (for the optimizer and checkpoints)."""
        device_side = [t for layer in self.params for t in layer.values()]
        return device_side + self.projections if self.trains_projection else device_side

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

    def features(self, layer: int, act: torch.Tensor) -> torch.Tensor:
        """What layer ``layer``'s M sees of activations (..., batch, outputs): them, or per-channel projections."""
        fmap = self.feature_maps[layer]
        if fmap is None:
            return act
        per_channel = act.reshape(*act.shape[:-1], -1, fmap.shape[0]) @ fmap
        return per_channel.flatten(-2)

    def readout(self, layer: int) -> "ChannelProjection | None":
        """How layer ``layer``'s outputs move its features, for the activity estimate (None: they are equal)."""
        fmap = self.feature_maps[layer]
        return None if fmap is None else ChannelProjection(fmap, self.projections[layer].shape[1] // fmap.shape[1])

    def objective(self, layer: int) -> SoftmaxObjective | PrototypeObjective:
        """Layer ``layer``'s local loss on its features (gradients flow into a trained M)."""
        if self.goodness_kind == "prototype":
            return PrototypeObjective(self.projections[layer], self.margin)
        return SoftmaxObjective(self.projections[layer])

    def layer_goodness(self, layer: int, act: torch.Tensor) -> torch.Tensor:
        """Class goodness of one layer: ``features(a_l) M_l^T``, or cosines to the prototypes."""
        return self.objective(layer).goodness(self.features(layer, act))

    def layer_loss(self, layer: int, act: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Layer ``layer``'s local loss on activations (..., B, outputs), mean over the batch."""
        return self.objective(layer).loss(self.features(layer, act), y)

    def goodness(self, acts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Class goodness of every layer."""
        return [self.layer_goodness(i, a) for i, a in enumerate(acts)]

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


class ChannelProjection:
    """A conv layer's features: each channel's map (``size`` values) times a fixed ``(size, f)`` projection.

    As a matrix ``J`` from outputs to features it is block diagonal, one ``fmap^T`` per channel;
    these apply it without ever building it.
    """

    def __init__(self, fmap: torch.Tensor, channels: int) -> None:
        self.fmap = fmap
        self.channels = channels

    def pull(self, t: torch.Tensor) -> torch.Tensor:
        """``t J`` for ``t`` (..., channels * f): (..., channels * size)."""
        fmap = self.fmap.to(t.dtype)
        return (t.reshape(*t.shape[:-1], -1, fmap.shape[1]) @ fmap.T).flatten(-2)

    def column_norms2(self) -> torch.Tensor:
        """(channels * size,): an output's column of ``J`` is its map position's row of ``fmap``."""
        return self.fmap.square().sum(1).repeat(self.channels)


def feature_maps(info: DeviceInfo, features: int, seed: int, device: str = "cpu") -> list[torch.Tensor | None]:
    """Fixed Gaussian projections (map size -> ``features``, scaled 1/sqrt(features)) for conv layers.

    None for dense layers and for maps no larger than ``features``. Drawn from their own
    generator, so a network without conv layers initialises exactly as before.
    """
    gen = torch.Generator().manual_seed(seed + 0x5EED)
    maps: list[torch.Tensor | None] = []
    for spec in info.layers:
        size = spec.chunk_outputs()
        if spec.conv is None or size <= features:
            maps.append(None)
        else:
            maps.append((torch.randn(size, features, generator=gen) / math.sqrt(features)).to(device))
    return maps
