"""A simulated resistive-crossbar network of dense and conv layers, with the physics of analog arrays.

``device`` holds the Device contract; ``pipeline`` composes the physics effects, one small class
each (``inputs``, ``array``, ``readout``, ``programming``, ``faults``, ``drift``), on the
conductances of ``conductance``; ``options`` holds every option; ``cache`` and ``clock`` the last
reads and the device time.
"""

from simulators.crossbar.device import SimulatedCrossbar
from simulators.crossbar.options import CrossbarOptions, CrossbarPhysics

__all__ = ["CrossbarOptions", "CrossbarPhysics", "SimulatedCrossbar"]
