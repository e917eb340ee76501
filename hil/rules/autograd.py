"""Simulator-only baselines that use autograd: ``mf-ad`` and ``bp``."""

import torch

from devices.errors import CapabilityError
from devices.interface import Device, Differentiable
from hil.config import TrainConfig
from hil.model import MonoForward
from hil.rules.base import Rule, StepOutput


class _AutogradRule(Rule):
    def __init__(self, device: Device, model: MonoForward, config: TrainConfig) -> None:
        super().__init__(device, model, config)
        if not (isinstance(device, Differentiable) and self.info.capabilities.differentiable):
            raise CapabilityError(
                f"rule {self.name!r} needs autograd through the device, which only a simulated "
                f"device (sim://) offers; {config.device!r} does not. Use --rule mf-dd on hardware."
            )
        self.autograd_device: Differentiable = device


class MonoForwardAD(_AutogradRule):
    """Mono-Forward with each layer's local loss differentiated by autograd (inputs detached)."""

    name = "mf-ad"

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepOutput:
        a = x
        total = torch.zeros(())
        acts = []
        for i, layer in enumerate(self.model.params):
            a = self.autograd_device.differentiable_layer(i, layer, a.detach())
            total = total + self.model.layer_loss(i, a, y)
            acts.append(a.detach())
        total.backward()
        return StepOutput(total.item() / len(acts), acts)


class Backprop(_AutogradRule):
    """End-to-end backprop through every layer to the last layer's local loss."""

    name = "bp"
    layer_local = False

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepOutput:
        a = x
        acts = []
        for i, layer in enumerate(self.model.params):
            a = self.autograd_device.differentiable_layer(i, layer, a)
            acts.append(a)
        loss = self.model.layer_loss(len(acts) - 1, acts[-1], y)
        loss.backward()
        return StepOutput(loss.item(), [a.detach() for a in acts])
