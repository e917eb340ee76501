"""Open a device from a URL: the scheme picks the backend.

Backends register under the ``hil.devices`` entry-point group (name = URL scheme, value = a
callable taking the URL), the way pyserial and pyvisa pick transports by string. Code can also
call :func:`register` directly.
"""

from collections.abc import Callable
from importlib.metadata import entry_points
from urllib.parse import parse_qsl, urlsplit

from devices.errors import DeviceURLError
from devices.interface import Device

Opener = Callable[[str], Device]
_openers: dict[str, Opener] = {}


def register(scheme: str, opener: Opener) -> None:
    """Make ``scheme://...`` URLs open with ``opener``."""
    _openers[scheme] = opener


def schemes() -> list[str]:
    """Every scheme a URL can use: registered ones and installed entry points."""
    return sorted(set(_openers) | {ep.name for ep in entry_points(group="hil.devices")})


def open_device(url: str) -> Device:
    """Open the device a URL names, for example ``sim://crossbar?layers=64,32,10``."""
    scheme = urlsplit(url).scheme
    if not scheme:
        raise DeviceURLError(f"device URL {url!r} has no scheme; use one of {schemes()}")
    if scheme not in _openers:
        found = [ep for ep in entry_points(group="hil.devices") if ep.name == scheme]
        if not found:
            raise DeviceURLError(f"unknown device scheme {scheme!r} in {url!r}; use one of {schemes()}")
        _openers[scheme] = found[0].load()
    return _openers[scheme](url)


def url_options(url: str) -> dict[str, str]:
    """The query of a URL as a dict; a repeated key is an error."""
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    out: dict[str, str] = {}
    for k, v in pairs:
        if k in out:
            raise DeviceURLError(f"option {k!r} given twice in {url!r}")
        out[k] = v
    return out
