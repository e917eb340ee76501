"""Simulated devices: the physics of analog arrays, served in process or over a link."""

from simulators.crossbar import CrossbarOptions, SimulatedCrossbar

__all__ = ["CrossbarOptions", "SimulatedCrossbar"]
