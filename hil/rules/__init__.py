"""Learning rules by name."""

from devices.interface import Device
from hil.config import TrainConfig
from hil.model import MonoForward
from hil.rules.autograd import Backprop, MonoForwardAD
from hil.rules.base import Rule, StepOutput
from hil.rules.feedback_alignment import DirectFeedbackAlignment, MonotoneDFA
from hil.rules.mf_dd import MonoForwardDD

RULES: dict[str, type[Rule]] = {
    r.name: r for r in (MonoForwardDD, MonoForwardAD, Backprop, DirectFeedbackAlignment, MonotoneDFA)
}


def make_rule(device: Device, model: MonoForward, config: TrainConfig) -> Rule:
    """Build the rule ``config.rule`` names."""
    return RULES[config.rule](device, model, config)


__all__ = ["RULES", "Rule", "StepOutput", "make_rule"]
