"""The device's time: writes, reads and the link advance it; drift reads it."""

from pydantic import Field

from devices.interface import Counters
from simulators.options import StrictOptions

BYTES_PER_VALUE = 4


class TimingOptions(StrictOptions):
    write_seconds: float = Field(0.0, ge=0, description="time to program one row, per verify iteration")
    write_verify: int = Field(1, ge=1, description="write-verify iterations per write")
    read_seconds: float = Field(0.0, ge=0, description="time of one read (one input vector)")
    link_bytes_per_second: float = Field(0.0, ge=0, description="link bandwidth (0: no link cost)")
    link_latency: float = Field(0.0, ge=0, description="link latency per message, seconds")


class DeviceClock:
    """Device seconds since the device was opened, and what the work and the link cost.

    A write takes ``write_seconds`` per row times ``write_verify`` (memristor write-verify: several
    pulses per cell), a read ``read_seconds`` per input vector; both count as device time. A message
    on the link takes ``link_latency`` plus its bytes over ``link_bytes_per_second``: the clock moves
    (drift continues) but the device is idle.
    """

    def __init__(self, options: TimingOptions, counters: Counters, now: float = 0.0) -> None:
        self.options = options
        self.counters = counters
        self.now = now

    def write_time(self, rows: int) -> float:
        """Seconds to write an array of ``rows`` rows once."""
        return rows * self.options.write_seconds * self.options.write_verify

    def tick(self, seconds: float) -> None:
        """The device worked ``seconds``."""
        self.now += seconds
        self.counters.device_seconds += seconds

    def link(self, values_out: int, values_in: int) -> None:
        """A message carried ``values_out`` values to the device and ``values_in`` back."""
        opts = self.options
        self.counters.bytes_sent += values_out * BYTES_PER_VALUE
        self.counters.bytes_received += values_in * BYTES_PER_VALUE
        if opts.link_bytes_per_second > 0:
            seconds = opts.link_latency + (values_out + values_in) * BYTES_PER_VALUE / opts.link_bytes_per_second
            self.now += seconds
            self.counters.extra["link_seconds"] = self.counters.extra.get("link_seconds", 0.0) + seconds
