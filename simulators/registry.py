"""``sim://KIND?options``: open a simulated device in process."""

from urllib.parse import urlsplit

from pydantic import ValidationError

from devices.errors import DeviceURLError
from devices.interface import Device
from devices.registry import url_options
from simulators.crossbar import CrossbarOptions, SimulatedCrossbar

KINDS = {"crossbar": (CrossbarOptions, SimulatedCrossbar)}


def open_sim(url: str) -> Device:
    """Open ``sim://crossbar?layers=64,256,256&activation=relu``."""
    kind = urlsplit(url).netloc or "crossbar"
    if kind not in KINDS:
        raise DeviceURLError(f"unknown simulator {kind!r} in {url!r}; choose one of {sorted(KINDS)}")
    options_cls, device_cls = KINDS[kind]
    try:
        options = options_cls(**url_options(url))
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        valid = ", ".join(options_cls.model_fields)
        raise DeviceURLError(
            f"{url!r}: option {field!r}: {first['msg']} (options of sim://{kind}: {valid})"
        ) from None
    return device_cls(options)
