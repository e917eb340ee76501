"""What a run will cost, estimated before it starts: memory, refused when the machine cannot hold
it, and time per epoch, named at start when it is impractical."""

import math
import os

from devices.info import DeviceInfo
from hil.config import ConfigError

BYTES = 4  # float32
HOST_COPIES = 6
"""Host copies of each device parameter in training: the tensor, its gradient, two Adam moments, the
parameters sent to the device and a checkpoint's."""
IMPRACTICAL_EPOCH_SECONDS = 30 * 60.0


def physical_memory() -> int:
    """Bytes of memory this machine has."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parameter_count(info: DeviceInfo) -> int:
    """Parameters of every layer of a device."""
    return sum(math.prod(p.shape) for spec in info.layers for p in spec.params)


def host_bytes(info: DeviceInfo) -> int:
    """Memory the host holds for a device's parameters during training."""
    return HOST_COPIES * BYTES * parameter_count(info)


def check_memory(needed: int, what: str, fix: str) -> None:
    """Refuse (:class:`ConfigError`) when ``needed`` bytes exceed this machine's memory."""
    have = physical_memory()
    if needed > have:
        raise ConfigError(f"{what} needs about {needed / 1e9:,.1f} GB of memory and this machine has "
                          f"{have / 1e9:,.1f} GB; {fix}")


def duration(seconds: float) -> str:
    """``1 h 44 min``, ``12 min``, ``40 s``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 60)} min" if seconds >= 60 else f"{seconds:.0f} s"
