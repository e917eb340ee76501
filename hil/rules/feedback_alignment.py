"""``dfa`` and ``mdfa``: direct feedback alignment, computed on the host from measured activations.

One FORWARD gives every layer's activations; the output error ``e = softmax(a_L M^T) - onehot(y)``
of the last layer's readout M reaches every layer through a fixed random feedback matrix B_l:
``delta_l = (e B_l) * f'(a_l)``, and ``dW_l = gain_l * delta_l^T x_l / batch``. No autograd, no
perturbation queries: one query per layer per step, like a backprop-free training chip.

The monotone variant (mdfa, Lechner et al., ICLR 2020) keeps the weights of every layer after the
first non-negative, the readout included (clamped to 1e-6 after each step, initialised
non-negative), with non-negative feedback, which makes its updates sign-correct for one output;
it needs a tanh or hardtanh device.

A binary task (two classes) has one output, as in the paper: the readout's class-0 row mirrors
class 1's (``m_0 = -m_1``), so the logit is ``z = 2 a_L m_1^T``, the error ``e = sigmoid(z) - y`` is
a scalar per sample and each B_l is a single row. With more than one output, non-negative feedback
is no longer sign-correct, which is why mDFA trails DFA on many classes.
"""

import torch

from devices.errors import CapabilityError
from devices.interface import Device
from hil.config import TrainConfig
from hil.model import MonoForward
from hil.rules.base import Rule, StepOutput

MONOTONE_FLOOR = 1e-6


def activation_slope(activation: str, a: torch.Tensor) -> torch.Tensor:
    """f'(z) written in terms of the activation's output a = f(z)."""
    if activation == "relu":
        return (a > 0).to(a.dtype)
    if activation == "tanh":
        return 1 - a.square()
    if activation == "hardtanh":
        return (a.abs() < 1).to(a.dtype)
    if activation == "identity":
        return torch.ones_like(a)
    raise ValueError(f"no slope for activation {activation!r}")


class DirectFeedbackAlignment(Rule):
    """Every device layer learns from the output error through its own fixed random matrix."""

    name = "dfa"
    layer_local = False
    prototype_goodness = False

    def __init__(self, device: Device, model: MonoForward, config: TrainConfig) -> None:
        super().__init__(device, model, config)
        if any(spec.kind != "dense" for spec in self.info.layers):
            raise CapabilityError(f"rule {self.name!r} updates dense weight arrays; {config.device!r} has "
                                  f"{sorted({spec.kind for spec in self.info.layers})} layers. Use mf-dd there.")
        classes = model.projections[-1].shape[0]
        self.single_output = classes == 2
        """A binary task: one logit, class 1's readout row against its mirror for class 0."""
        gen = torch.Generator().manual_seed(config.seed + 7919)
        self.feedback = []
        for spec in self.info.layers:
            b = self._draw_feedback(1 if self.single_output else classes, spec.outputs, gen)
            self.feedback.append(b.to(model.projections[-1].device))

    def _draw_feedback(self, classes: int, width: int, gen: torch.Generator) -> torch.Tensor:
        return (torch.rand(classes, width, generator=gen) * 2 - 1) / width**0.5

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepOutput:
        params = self.model.device_params()
        acts = self.device.forward(params, x)
        inputs = [x, *acts[:-1]]
        with torch.no_grad():
            readout = self.model.projections[-1].detach()
            probs = torch.softmax(acts[-1] @ readout.T, -1)
            loss = torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), y)
            error = probs
            error[torch.arange(len(y)), y] -= 1
            error /= len(y)
            # mirrored rows get mirrored gradients (e_0 = -e_1), so Adam keeps them mirrored
            self.model.projections[-1].grad = error.T @ acts[-1]
            if self.single_output:  # softmax over (-z/2, z/2) is sigmoid(z): class 1's error is the output's
                error = error[:, 1:]
            for i, spec in enumerate(self.info.layers):
                delta = (error @ self.feedback[i]) * activation_slope(spec.activation, acts[i])
                self.model.params[i]["weight"].grad = spec.gain * delta.T @ inputs[i].to(delta.dtype)
                self.model.params[i]["bias"].grad = delta.sum(0)
        return StepOutput(loss.item(), acts)

    def constrain_(self) -> None:
        """A binary task's class-0 readout row mirrors class 1's (set at the start, kept after each step)."""
        if self.single_output:
            with torch.no_grad():
                readout = self.model.projections[-1]
                readout[0] = -readout[1]

    def summary(self) -> str:
        return f"{self.name}: fixed random feedback of the output error to every layer; 1 query per layer per step"


class MonotoneDFA(DirectFeedbackAlignment):
    """DFA with non-negative weights after the first layer and non-negative feedback."""

    name = "mdfa"

    def __init__(self, device: Device, model: MonoForward, config: TrainConfig) -> None:
        activations = {spec.activation for spec in device.info().layers}
        if not activations <= {"tanh", "hardtanh"}:
            raise CapabilityError(
                f"rule 'mdfa' needs tanh or hardtanh layers; {config.device!r} has {sorted(activations)}. "
                "On the simulator add activation=tanh to the URL, e.g. sim://crossbar?activation=tanh")
        super().__init__(device, model, config)
        with torch.no_grad():
            for w in self._monotone():
                w.abs_().clamp_(min=MONOTONE_FLOOR)

    def _draw_feedback(self, classes: int, width: int, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(classes, width, generator=gen) / width**0.5

    def _monotone(self) -> list[torch.Tensor]:
        """The weights kept non-negative: every layer's after the first, and the readout (its trained rows)."""
        readout = self.model.projections[-1]
        return [layer["weight"] for layer in self.model.params[1:]] + [readout[1:] if self.single_output else readout]

    def constrain_(self) -> None:
        with torch.no_grad():
            for w in self._monotone():
                w.clamp_(min=MONOTONE_FLOOR)
        super().constrain_()
