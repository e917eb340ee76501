"""Typed errors raised by devices and links.

Every error a device can raise derives from :class:`DeviceError`, so a caller can catch one
class for "the device said no" and still tell the cases apart.
"""


class DeviceError(Exception):
    """Base class of every error raised by a device or its link."""


class DeviceURLError(DeviceError, ValueError):
    """A device URL could not be parsed, names an unknown scheme or carries bad options."""


class DeviceConfigError(DeviceError, ValueError):
    """A request does not fit the device: wrong shapes, out-of-bounds parameters, bad layer."""


class CapabilityError(DeviceError):
    """The device lacks a capability the caller asked for (for example autograd)."""


class LinkError(DeviceError):
    """The link to a bench device failed: timeout, corrupted frame, unplug."""
