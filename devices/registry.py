"""Open a device from a URL: the scheme picks the backend.

Backends register under the ``hil.devices`` entry-point group (name = URL scheme, value = a
callable taking the URL), the way pyserial and pyvisa pick transports by string. Code can also
call :func:`register` directly.
"""

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ValidationError

from devices.errors import DeviceURLError
from devices.interface import Device

Opener = Callable[[str], Device]
M = TypeVar("M", bound=BaseModel)
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


def parse_options(url: str, model: type[M], values: dict[str, Any] | None = None,
                  also: tuple[str, ...] = ()) -> M:
    """A URL's options (or ``values`` built from them) as ``model``; a bad one is a
    :class:`DeviceURLError` naming it and listing the valid options (``also`` adds names)."""
    try:
        return model(**(url_options(url) if values is None else values))
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        valid = ", ".join([*also, *model.model_fields])
        raise DeviceURLError(f"{url!r}: option {field!r}: {first['msg']} (options: {valid})") from None


def url_options(url: str) -> dict[str, str]:
    """The query of a URL as a dict; a repeated key is an error."""
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    out: dict[str, str] = {}
    for k, v in pairs:
        if k in out:
            raise DeviceURLError(f"option {k!r} given twice in {url!r}")
        out[k] = v
    return out
