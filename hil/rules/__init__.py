"""Learning rules by name.

Rules register under the ``hil.rules`` entry-point group (name = the rule's name, value = its
:class:`Rule` class), the way device backends register under ``hil.devices``; a rule is imported
only when a config names it.
"""

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from devices.interface import Device
from hil.model import MonoForward
from hil.rules.base import Rule, RuleOptions, StepOutput

if TYPE_CHECKING:
    from hil.config import TrainConfig

GROUP = "hil.rules"
_rules: dict[str, type[Rule]] = {}


class UnknownRule(ValueError):
    """No installed rule has the name; the message lists the known ones."""


def rule_names() -> list[str]:
    """Every rule a config can name: the installed entry points (and those loaded already)."""
    return sorted(set(_rules) | {ep.name for ep in entry_points(group=GROUP)})


def rule_class(name: str) -> type[Rule]:
    """The rule registered as ``name``, loaded once."""
    if name not in _rules:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
        if not found:
            known = ", ".join(rule_names()) or f"none (no {GROUP} entry points: reinstall hil, pip install -e .)"
            raise UnknownRule(f"unknown rule {name!r}; known rules: {known}")
        _rules[name] = found[0].load()
    return _rules[name]


def make_rule(device: Device, model: MonoForward, config: "TrainConfig") -> Rule:
    """Build the rule ``config.rule`` names, with the options of its ``rule_options`` section."""
    return rule_class(config.rule)(device, model, config)

__all__ = ["GROUP", "Rule", "RuleOptions", "StepOutput", "UnknownRule", "make_rule", "rule_class", "rule_names"]
