"""What every learning rule provides to the trainer."""

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from devices.interface import Device
from hil.model import MonoForward

if TYPE_CHECKING:
    from hil.config import TrainConfig


@dataclass
class StepOutput:
    """Mean local loss of the step and the base activations the device returned."""

    loss: float
    acts: list[torch.Tensor]


class RuleOptions(BaseModel):
    """A rule's own settings, the ``rule_options`` section of a config; a rule subclasses it as ``Options``.

    Each field becomes a ``hil train`` flag of the same name (``-`` for ``_``), its description the help.
    """

    model_config = ConfigDict(extra="forbid")


class Rule(ABC):
    """Sets ``.grad`` on every model tensor from one batch; the optimizer does the rest.

    A rule is registered by ``name`` under the ``hil.rules`` entry-point group (see :mod:`hil.rules`).
    """

    name: str
    Options: ClassVar[type[RuleOptions]] = RuleOptions
    """The rule's settings (none by default); the config validates ``rule_options`` against it."""
    layer_local: bool = True
    """Every layer has its own goodness (Mono-Forward), so cumulative-goodness prediction applies."""
    prototype_goodness: ClassVar[bool] = True
    """The rule trains the ``prototype`` goodness too (not only a softmax readout)."""

    def __init__(self, device: Device, model: MonoForward, config: "TrainConfig") -> None:
        self.device = device
        self.model = model
        self.config = config
        self.options = config.rule_options
        self.info = device.info()

    @abstractmethod
    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepOutput:
        """Measure the batch on the device and set gradients; ``step`` counts from 0 per run."""

    def calibrate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any] | None:
        """Measure what the rule needs from the device before training (once per run)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs of the rule (for example the calibrated eps)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def step_seconds(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Seconds a training step on batch ``(x, y)`` takes, from timing part of it on the device.

        Default: three times a forward (the forward, then autograd or host work of about twice it).
        """
        params = self.model.device_params()
        return 3 * fastest(lambda: self.device.forward(params, x))

    def step_bytes(self) -> int:
        """Working memory a step needs beyond the model and its optimizer (default: none worth counting)."""
        return 0

    def memory_advice(self) -> str:
        """What to change when a step needs more memory than the machine has."""
        return "use narrower layers"

    def constrain_(self) -> None:
        """Project the model onto the rule's constraints after each optimizer step (default: none)."""

    def margin(self) -> float:
        """How far inside its bounds every device parameter is kept (room for perturbations)."""
        return 0.0

    def summary(self) -> str:
        """One line that says how the rule computes its updates."""
        return self.name

    def report(self) -> dict[str, Any]:
        """The rule's own fields for the run summary and the started event: its options (default), and
        what a rule adds (how it estimated, at what step and cost)."""
        return self.options.model_dump(mode="json")


def fastest(call: Callable[[], object], tries: int = 3) -> float:
    """Seconds of the fastest of ``tries`` calls (the first pays for warming up)."""
    times = []
    for _ in range(tries):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def step_seeds(run_seed: int, step: int, stream: int, count: int) -> tuple[int, ...]:
    """32-bit direction seeds for one step and stream (a layer, or a projection), reproducibly."""
    state = np.random.SeedSequence([run_seed, step, stream]).generate_state(count)
    return tuple(int(s) for s in state)
