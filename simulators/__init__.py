"""Simulated devices: the physics of analog arrays, served in process or over a link."""

from simulators.crossbar import CrossbarOptions, SimulatedCrossbar
from simulators.photonic import PhotonicOptions, SimulatedPhotonicMesh

__all__ = ["CrossbarOptions", "PhotonicOptions", "SimulatedCrossbar", "SimulatedPhotonicMesh"]
