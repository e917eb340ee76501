"""A bench device over VISA (LAN socket, USBTMC, serial, GPIB), speaking the SCPI dialect of
``firmware_protocol.md`` (section 8) through pyvisa.

URL forms (``visa://`` + any VISA resource name)::

    visa://TCPIP0::127.0.0.1::5025::SOCKET     a LAN instrument on a raw socket
    visa://ASRL/dev/ttyUSB0::INSTR             a serial port
    visa://USB0::0x2E8A::0x000A::SN42::INSTR   USBTMC

Options (URL query): ``backend`` (pyvisa backend, default ``@py`` = pyvisa-py; ``@ivi`` uses an
installed VISA library), ``timeout`` (seconds per reply, 5), ``reconnects`` (10).
"""

import logging
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import pyvisa
from pydantic import BaseModel, ConfigDict, Field

from devices.bench import BenchDevice, InputWrite, ParamWrite
from devices.errors import CapabilityError, DeviceConfigError, DeviceURLError, LinkError
from devices.messages import PerturbedForward, ProtocolError, pack_values
from devices.registry import parse_options

log = logging.getLogger(__name__)

T = TypeVar("T")
DISTRIBUTION_CODES = {"rademacher": "RAD", "gaussian": "GAUS", "sphere": "SPH", "bias": "BIAS"}
CONFIG_CODES = {-221, -222, -223, -224}


class VisaOptions(BaseModel):
    """Link options, settable in the device URL's query."""

    model_config = ConfigDict(extra="forbid")

    backend: str = Field("@py", description="pyvisa backend: @py (pyvisa-py) or @ivi (a VISA library)")
    timeout: float = Field(5.0, gt=0, description="seconds to wait for a reply")
    reconnects: int = Field(10, ge=0, description="reopen attempts after a timeout or a lost connection")


class ScpiErrors(LinkError):
    """The device queued SCPI errors for what we sent (codes and texts in ``errors``)."""

    def __init__(self, message: str, errors: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.errors = errors


class VisaDevice(BenchDevice):
    """The host side of the SCPI dialect: *IDN? check, binary blocks, error queue, reconnects."""

    reopen_errors = (LinkError, pyvisa.errors.VisaIOError, OSError)

    def __init__(self, url: str) -> None:
        super().__init__(url)
        parts = urlsplit(url)
        self.resource_name = parts.netloc + parts.path
        if not self.resource_name:
            raise DeviceURLError(f"{url!r} names no VISA resource; e.g. visa://TCPIP0::127.0.0.1::5025::SOCKET")
        self.options = parse_options(url, VisaOptions)
        try:
            self._manager = pyvisa.ResourceManager(self.options.backend)
        except (OSError, ValueError) as err:
            raise LinkError(f"{url}: cannot load VISA backend {self.options.backend!r}: {err}") from None
        self.resource: pyvisa.resources.MessageBasedResource | None = None
        self.reconnect_tries = self.options.reconnects
        try:
            self.identity = self._open()
            self._info = self._describe(self._retry(lambda: self._query_block("NETW:INFO?")), "NETW:INFO?")
            self._require_capabilities()
        except Exception:
            self.close()
            raise
        self._forget()
        log.info("opened %s: %s", url, self.identity)

    # ----------------------------------------------------------------- link primitives

    def _send_writes(self, params: list[ParamWrite], inputs: list[InputWrite]) -> None:
        def send() -> None:
            for layer, index, value in params:
                self._write_block(f"NETW:PAR {layer},{index},0,", pack_values(value))
            for layer, value in inputs:
                self._write_block(f"NETW:INP {layer},{len(value)},0,", pack_values(value))
            self.check_errors()

        self._retry(send)

    def _measure_forward(self) -> bytes:
        return self._retry(lambda: self._query_block("MEAS:FORW?"))

    def _measure_perturbed(self, request: PerturbedForward) -> bytes:
        chunk = -1 if request.chunk is None else request.chunk
        command = (f"MEAS:PERT? {request.layer},{DISTRIBUTION_CODES[request.distribution]},{request.signs},"
                   f"{request.eps!r},{chunk}," + ",".join(str(s) for s in request.seeds))
        return self._retry(lambda: self._query_block(command))

    # ----------------------------------------------------------------- more of the dialect

    def query(self, command: str) -> str:
        """A text query, for anything the dialect offers (``SYST:VERS?``, ``*IDN?``)."""
        return self._retry(lambda: self._query_text(command))

    def errors(self) -> list[tuple[int, str]]:
        """Drain the error queue (``SYST:ERR?`` until ``0,"No error"``)."""
        out = []
        for _ in range(64):
            code_text, _, message = self._query_text("SYST:ERR?").partition(",")
            try:
                code = int(code_text)
            except ValueError:
                raise ProtocolError(f"{self.url}: SYST:ERR? answered {code_text!r}") from None
            if code == 0:
                break
            out.append((code, message.strip('"')))
        return out

    def reset(self) -> None:
        """Return the device to its power-up state (``*RST``); the host forgets what it had written."""
        self._retry(lambda: self._write("*RST"))
        self._forget()

    def check_errors(self) -> None:
        """Raise a typed error if the device queued any: config errors, capability, or protocol."""
        errors = self.errors()
        if not errors:
            return
        codes = {code for code, _ in errors}
        text = "; ".join(f"{code} {message}" for code, message in errors)
        message = f"{self.url}: the device reports {text}"
        if codes & CONFIG_CODES:
            raise DeviceConfigError(message)
        if -241 in codes:
            raise CapabilityError(message)
        raise ScpiErrors(message, errors)

    def close(self) -> None:
        if self.resource is not None:
            try:
                self.resource.close()
            except (pyvisa.errors.VisaIOError, OSError):
                pass
            self.resource = None

    # ----------------------------------------------------------------- internals

    def _open(self) -> str:
        try:
            self.resource = self._manager.open_resource(  # type: ignore[assignment]
                self.resource_name, read_termination="\n", write_termination="\n",
                timeout=int(1000 * self.options.timeout))
            identity = self._query_text("*IDN?")
        except (pyvisa.errors.VisaIOError, OSError, ValueError) as err:
            raise LinkError(f"cannot open VISA resource {self.resource_name}: {err}") from None
        if not identity.startswith("hil,"):
            raise LinkError(f"{self.url} answered *IDN? with {identity!r}, not a hil device (expected 'hil,...')")
        protocol = self._query_text("SYST:PROT?")
        if protocol != "1":
            raise LinkError(f"{self.url}: device speaks protocol {protocol!r}, this host speaks 1")
        self._write("*CLS")
        return identity

    def _retry(self, action: Callable[[], T]) -> T:
        """Run ``action``; after a timeout or a dropped connection, reconnect, restore and rerun it."""
        started = time.perf_counter()
        for attempt in range(self.options.reconnects + 1):
            try:
                result = action()
                self._counters.device_seconds += time.perf_counter() - started
                return result
            except (pyvisa.errors.VisaIOError, OSError, _Stale) as err:
                if isinstance(err, pyvisa.errors.VisaIOError) and err.error_code == pyvisa.constants.VI_ERROR_TMO:
                    self.stats.timeouts += 1
                if attempt == self.options.reconnects:
                    raise LinkError(f"{self.url}: {err}; gave up after {attempt} reconnects") from None
                self._reconnect(str(err))
        raise AssertionError("unreachable")

    def _reopen(self) -> str:
        return self._open()

    def _resource(self) -> pyvisa.resources.MessageBasedResource:
        if self.resource is None:
            raise _Stale("resource closed")
        return self.resource

    def _write(self, command: str) -> None:
        log.debug("-> %s", command)
        self._resource().write(command)
        self.stats.bytes_sent += len(command) + 1
        self.stats.frames_sent += 1

    def _write_block(self, header: str, data: bytes) -> None:
        log.debug("-> %s<block of %d bytes>", header, len(data))
        self._resource().write_binary_values(header, data, datatype="B")
        self.stats.bytes_sent += len(header) + len(data) + len(str(len(data))) + 3
        self.stats.frames_sent += 1

    def _query_text(self, command: str) -> str:
        started = time.perf_counter()
        reply = self._resource().query(command).strip()
        self._count_reply(command, started, len(reply) + 1, 0)
        return reply

    def _query_block(self, command: str) -> bytes:
        """A block query; an empty block means the device refused, and its error queue says why."""
        started = time.perf_counter()
        data = self._resource().query_binary_values(command, datatype="B", container=bytes)
        self._count_reply(command, started, len(data) + len(str(len(data))) + 3, len(data))
        if not data:
            self.check_errors()
            raise ProtocolError(f"{self.url}: {command.split()[0]} returned no data and queued no error")
        return data

    def _count_reply(self, command: str, started: float, wire: int, payload: int) -> None:
        self.stats.bytes_sent += len(command) + 1
        self.stats.frames_sent += 1
        self.stats.bytes_received += wire
        self.stats.payload_bytes_received += payload
        self.stats.frames_received += 1
        self.stats.round_trips.append(time.perf_counter() - started)
        log.debug("<- %s: %d bytes in %.2f ms", command.split()[0], wire, 1000 * (time.perf_counter() - started))


class _Stale(Exception):
    """The resource was closed under us; reconnect."""


def open_visa(url: str) -> VisaDevice:
    """Entry point for the ``visa`` URL scheme."""
    return VisaDevice(url)
