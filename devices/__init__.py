"""Device-abstraction layer: the Device interface, its errors, directions and the URL registry."""

from devices.errors import (
    CapabilityError,
    DeviceConfigError,
    DeviceError,
    DeviceURLError,
    LinkError,
)
from devices.info import Capabilities, DeviceInfo, LayerSpec, ParamSpec
from devices.interface import (
    Counters,
    Device,
    Differentiable,
    LayerParams,
    Perturbation,
    check_params,
    clip_to_bounds,
    join_chunks,
    split_chunks,
)
from devices.registry import open_device, register, schemes

__all__ = [
    "CapabilityError", "Capabilities", "Counters", "Device", "DeviceConfigError", "DeviceError",
    "DeviceInfo", "DeviceURLError", "Differentiable", "LayerParams", "LayerSpec", "LinkError",
    "ParamSpec", "Perturbation", "check_params", "clip_to_bounds", "join_chunks", "open_device",
    "register", "schemes", "split_chunks",
]
