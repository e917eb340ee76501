"""``sim://KIND?preset=NAME&options``: open a simulated device in process."""

from urllib.parse import urlsplit

from devices.errors import DeviceURLError
from devices.interface import Device
from devices.registry import parse_options, url_options
from simulators.crossbar import CrossbarOptions, SimulatedCrossbar
from simulators.photonic import PhotonicOptions, SimulatedPhotonicMesh
from simulators.presets import preset_options

KINDS: dict[str, tuple[type, type[Device]]] = {
    "crossbar": (CrossbarOptions, SimulatedCrossbar),
    "photonic": (PhotonicOptions, SimulatedPhotonicMesh),
}


def open_sim(url: str) -> Device:
    """Open ``sim://crossbar?preset=pcm&seed=3`` or ``sim://photonic?preset=silicon``: preset, then options."""
    kind = urlsplit(url).netloc or "crossbar"
    if kind not in KINDS:
        raise DeviceURLError(f"unknown simulator {kind!r} in {url!r}; choose one of {sorted(KINDS)}")
    options_cls, device_cls = KINDS[kind]
    given = url_options(url)
    preset = given.pop("preset", "ideal")
    try:
        values = {**preset_options(kind, preset), **given}
    except KeyError as err:
        raise DeviceURLError(f"{url!r}: {err.args[0]}") from None
    options = parse_options(url, options_cls, values, also=("preset",))
    try:
        options.check_memory()
        return device_cls(options, preset)  # type: ignore[call-arg]
    except ValueError as err:
        raise DeviceURLError(f"{url!r}: {err}") from None
