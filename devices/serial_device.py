"""A bench device over USB serial (or any pyserial URL), speaking ``firmware_protocol.md``.

URL forms::

    serial:///dev/ttyACM0?baud=115200      a port path
    serial://2E8A:000A                      the first USB port with this VID:PID
    serial://2E8A:000A/E6614C311B4A2F2B     ... and this serial number
    socket://localhost:5555                 pyserial's TCP transport (also rfc2217://, hwgrep://, loop://)

Options (URL query): ``baud``, ``timeout`` (seconds of silence before a resend; default from the
device's HELLO), ``retries`` (resends per request before the link counts as lost, 5),
``reconnects`` (reopen attempts after an unplug, 10), ``pipeline`` (1: up to the device's
max_in_flight requests in flight; 0: one at a time).
"""

import logging
import select
import time
from urllib.parse import urlsplit

import serial
import serial.tools.list_ports
from pydantic import BaseModel, ConfigDict, Field

from devices.bench import BenchDevice, InputWrite, ParamWrite
from devices.codec import REPLY_BIT, Frame, FrameDecoder, encode_frame
from devices.errors import CapabilityError, DeviceConfigError, DeviceURLError, LinkError
from devices.messages import (
    CAP_BIAS,
    CAP_SEEDED,
    HELLO_REQUEST,
    SET_INPUT_HEAD,
    SET_PARAMS_HEAD,
    DeviceStatus,
    Hello,
    MessageType,
    PerturbedForward,
    ProtocolError,
    Status,
    pack_values,
    unpack_error,
)
from devices.registry import parse_options

log = logging.getLogger(__name__)

POLL_SECONDS = 0.02
READ_CHUNK = 1 << 20
PYSERIAL_SCHEMES = ("socket", "rfc2217", "hwgrep", "loop")
CONFIG_STATUSES = {Status.BAD_LAYER, Status.BAD_PARAM, Status.OUT_OF_RANGE, Status.OUT_OF_BOUNDS,
                   Status.BATCH_TOO_LARGE, Status.BAD_LENGTH}


class SerialOptions(BaseModel):
    """Link options, settable in the device URL's query."""

    model_config = ConfigDict(extra="forbid")

    baud: int = Field(115200, gt=0, description="baud rate (ignored by USB CDC and sockets)")
    timeout: float | None = Field(None, gt=0, description="silence before resending, seconds")
    retries: int = Field(5, ge=0, description="resends of one request before the link counts as lost")
    reconnects: int = Field(10, ge=0, description="reopen attempts after an unplug")
    pipeline: bool = Field(True, description="keep up to max_in_flight requests in flight")


class _LinkLost(Exception):
    """The port vanished or stopped answering; the exchange restarts after a reconnect."""


def find_usb_port(vid: int, pid: int, serial_number: str | None = None) -> str:
    """The path of the first serial port with this USB VID:PID (and serial number)."""
    for port in serial.tools.list_ports.comports():
        if port.vid == vid and port.pid == pid and serial_number in (None, port.serial_number):
            return port.device
    wanted = f"{vid:04X}:{pid:04X}" + (f" with serial number {serial_number}" if serial_number else "")
    raise LinkError(f"no serial port with USB ID {wanted}; `hil devices` lists what is plugged in")


class SerialDevice(BenchDevice):
    """The host side of the protocol: handshake, pipelined requests, retries, reconnects."""

    reopen_errors = (LinkError, _LinkLost)

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.options = parse_options(url, SerialOptions)
        self._next_id = 0
        self._fd: int | None = None
        self._decoder = FrameDecoder()
        self.port = self._open_port()
        try:
            self.hello = self._hello()
            self.identity = self.hello.identity
            self.reconnect_tries = self.options.reconnects
            if not self.hello.capabilities & CAP_SEEDED:
                raise CapabilityError(f"{url}: the device does not generate seeded perturbations (protocol v1 "
                                      "requires it)")
            (info_reply,) = self.transact([(MessageType.INFO, b"")])
            info = self._describe(info_reply.payload, "the INFO reply")
            # on this link HELLO's bits are what the firmware does, whatever its INFO text says
            bias = bool(self.hello.capabilities & CAP_BIAS)
            self._info = info.model_copy(update={"capabilities": info.capabilities.model_copy(
                update={"bias_perturbation": bias})})
        except Exception:
            self.close()
            raise
        self._forget()
        log.info("opened %s: %s, firmware %s", url, self.hello.identity, self.hello.firmware)

    # ----------------------------------------------------------------- link primitives

    def _send_writes(self, params: list[ParamWrite], inputs: list[InputWrite]) -> None:
        per_frame = (self.hello.max_request - SET_INPUT_HEAD.size) // 4
        requests: list[tuple[MessageType, bytes]] = []
        for layer, index, value in params:
            data = pack_values(value)
            for start in range(0, value.numel(), per_frame):
                head = SET_PARAMS_HEAD.pack(layer, index, 0, start)
                requests.append((MessageType.SET_PARAMS, head + data[4 * start:4 * (start + per_frame)]))
        for layer, value in inputs:
            data = pack_values(value)
            for start in range(0, value.numel(), per_frame):
                head = SET_INPUT_HEAD.pack(layer, 0, 0, len(value), start)
                requests.append((MessageType.SET_INPUT, head + data[4 * start:4 * (start + per_frame)]))
        self.transact(requests)

    def _measure_forward(self) -> bytes:
        (reply,) = self.transact([(MessageType.FORWARD, b"")])
        return reply.payload

    def _measure_perturbed(self, request: PerturbedForward) -> bytes:
        (reply,) = self.transact([(MessageType.PERTURBED_FORWARD, request.pack())])
        return reply.payload

    def close(self) -> None:
        port = getattr(self, "port", None)
        if port is not None:
            port.close()
            self.port = None

    # ----------------------------------------------------------------- more of the protocol

    def ping(self, payload: bytes = b"ping") -> float:
        """Round-trip time of one PING, seconds (checks the echo)."""
        started = time.perf_counter()
        (reply,) = self.transact([(MessageType.PING, payload)])
        if reply.payload != payload:
            raise ProtocolError("PING reply does not echo the request")
        return time.perf_counter() - started

    def status(self) -> DeviceStatus:
        """The device's own counters."""
        (reply,) = self.transact([(MessageType.STATUS, b"")])
        return DeviceStatus.unpack(reply.payload)

    def errors(self) -> list[tuple[int, str]]:
        """Drain the device's error queue (SCPI ``SYST:ERR?`` until ``0, No error``)."""
        out = []
        for _ in range(64):
            (reply,) = self.transact([(MessageType.ERROR, b"")])
            code, text = unpack_error(reply.payload)
            if code == 0:
                break
            out.append((code, text))
        return out

    def reset(self) -> None:
        """Return the device to its power-up state; the host forgets what it had written."""
        self.transact([(MessageType.RESET, b"")])
        self._forget()

    def transact(self, requests: list[tuple[MessageType, bytes]], check: bool = True) -> list[Frame]:
        """Send requests (pipelined when they commute) and return their replies in order.

        Survives lost and corrupted frames (resend with the same request id) and unplugs
        (reconnect, re-handshake, restore written state, resend). With ``check``, a reply with a
        non-zero status raises, with the device's own error text.
        """
        started = time.perf_counter()
        for attempt in range(self.options.reconnects + 1):
            try:
                replies = self._exchange(requests, self.hello.max_in_flight if self.options.pipeline else 1,
                                         self.options.timeout or self.hello.response_ms / 1000 + 0.25)
                break
            except _LinkLost as lost:
                if attempt == self.options.reconnects:
                    raise LinkError(f"{self.url}: {lost}; gave up after {attempt} reconnects") from None
                self._reconnect(str(lost))
        self._counters.device_seconds += time.perf_counter() - started
        if check:
            for (kind, _), reply in zip(requests, replies):
                if reply.status != Status.OK:
                    self._raise_refusal(kind, reply.status)
        return replies

    # ----------------------------------------------------------------- internals

    def _raise_refusal(self, kind: MessageType, status: int) -> None:
        texts = [text for _, text in self.errors()]
        name = Status(status).name if status in Status._value2member_map_ else str(status)
        message = f"{self.url}: device refused {kind.name} ({name}): {'; '.join(texts) or 'no details'}"
        if status in CONFIG_STATUSES:
            raise DeviceConfigError(message)
        if status == Status.UNSUPPORTED:
            raise CapabilityError(message)
        raise ProtocolError(message, Status(status) if status in Status._value2member_map_ else Status.INTERNAL)

    def _open_port(self) -> serial.SerialBase:
        parts = urlsplit(self.url)
        if parts.scheme in PYSERIAL_SCHEMES:
            target = f"{parts.scheme}://{parts.netloc}{parts.path}"
        elif parts.netloc:
            vid, _, pid = parts.netloc.partition(":")
            try:
                target = find_usb_port(int(vid, 16), int(pid, 16), parts.path.strip("/") or None)
            except ValueError:
                raise DeviceURLError(f"{self.url!r}: expected serial://VID:PID in hex, e.g. serial://2E8A:000A") \
                    from None
        elif parts.path:
            target = parts.path
        else:
            raise DeviceURLError(f"{self.url!r} names no port; e.g. serial:///dev/ttyACM0")
        try:
            port = serial.serial_for_url(target, baudrate=self.options.baud, timeout=POLL_SECONDS,
                                         write_timeout=30)
        except (serial.SerialException, OSError, ValueError) as err:
            raise LinkError(f"cannot open {target}: {err}") from None
        try:
            self._fd = port.fileno()
            port.timeout = 0
        except (AttributeError, NotImplementedError, OSError, serial.SerialException):
            self._fd = None
        return port

    def _hello(self) -> Hello:
        self._write(b"\x00")
        self._decoder = FrameDecoder()
        (reply,) = self._exchange([(MessageType.HELLO, HELLO_REQUEST.pack(1, 1))], window=1,
                                  timeout=self.options.timeout or 1.0)
        if reply.status == Status.VERSION:
            raise LinkError(f"{self.url}: the device speaks no protocol version this host knows (1)")
        if reply.status != Status.OK:
            raise ProtocolError(f"{self.url}: HELLO refused with status {reply.status}")
        return Hello.unpack(reply.payload)

    def _reopen(self) -> str:
        self.port = self._open_port()
        self.hello = self._hello()
        return self.hello.identity

    def _exchange(self, requests: list[tuple[MessageType, bytes]], window: int, timeout: float) -> list[Frame]:
        """One attempt at a batch of requests over the current port; _LinkLost if the port fails."""
        frames = [Frame(int(kind), self._new_id(), payload) for kind, payload in requests]
        wires = [encode_frame(f) for f in frames]
        index_of = {f.request_id: i for i, f in enumerate(frames)}
        replies: list[Frame | None] = [None] * len(frames)
        sent_at = [0.0] * len(frames)
        attempts = [0] * len(frames)
        outstanding: list[int] = []
        next_up = 0
        heard = time.perf_counter()
        while next_up < len(frames) or outstanding:
            while next_up < len(frames) and len(outstanding) < window:
                self._send(wires[next_up], frames[next_up])
                sent_at[next_up] = time.perf_counter()
                outstanding.append(next_up)
                next_up += 1
            data = self._read()
            now = time.perf_counter()
            if data:
                heard = now
            rejected = self._decoder.rejected
            for reply in self._decoder.feed(data):
                i = index_of.get(reply.request_id)
                if i is not None and not reply.is_reply and reply.payload == frames[i].payload:
                    raise LinkError(f"{self.url}: the port echoes our own requests back (a loopback such as "
                                    "loop:// or shorted RX/TX); no device is answering")
                if i is None or replies[i] is not None or reply.type != frames[i].type | REPLY_BIT:
                    continue
                replies[i] = reply
                outstanding.remove(i)
                self.stats.round_trips.append(now - sent_at[i])
                log.debug("<- %s id %d, status %d, %d bytes, %.2f ms", MessageType(frames[i].type).name,
                          reply.request_id, reply.status, len(reply.payload), 1000 * (now - sent_at[i]))
                self.stats.frames_received += 1
                self.stats.payload_bytes_received += len(reply.payload)
                for j in outstanding:
                    if sent_at[j] < sent_at[i]:
                        self._resend(j, wires, frames, sent_at, attempts, now)
            self.stats.crc_errors += self._decoder.rejected - rejected
            if outstanding and now - heard > timeout:
                self.stats.timeouts += 1
                heard = now
                for j in outstanding:
                    self._resend(j, wires, frames, sent_at, attempts, now)
        return replies  # type: ignore[return-value]

    def _resend(self, i: int, wires: list[bytes], frames: list[Frame], sent_at: list[float],
                attempts: list[int], now: float) -> None:
        attempts[i] += 1
        if attempts[i] > self.options.retries:
            raise _LinkLost(f"no intact reply to {MessageType(frames[i].type).name} after {attempts[i]} tries")
        self.stats.resends += 1
        log.debug("resend %s id %d (attempt %d)", MessageType(frames[i].type).name, frames[i].request_id, attempts[i])
        self._send(wires[i], frames[i])
        sent_at[i] = now

    def _send(self, wire: bytes, frame: Frame) -> None:
        log.debug("-> %s id %d, %d bytes", MessageType(frame.type).name, frame.request_id, len(frame.payload))
        self._write(wire)
        self.stats.frames_sent += 1

    def _write(self, data: bytes) -> None:
        if self.port is None:
            raise _LinkLost("port closed")
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as err:
            raise _LinkLost(str(err)) from None
        self.stats.bytes_sent += len(data)

    def _read(self) -> bytes:
        if self.port is None:
            raise _LinkLost("port closed")
        try:
            if self._fd is None:  # a transport without a file descriptor (loop://, rfc2217://)
                data = self.port.read(self.port.in_waiting or 1)
            elif select.select([self._fd], [], [], POLL_SECONDS)[0]:
                data = self.port.read(READ_CHUNK)  # timeout 0: whatever has arrived, in one call
            else:
                data = b""
        except (serial.SerialException, OSError, ValueError) as err:
            raise _LinkLost(str(err)) from None
        self.stats.bytes_received += len(data)
        return data

    def _new_id(self) -> int:
        self._next_id = (self._next_id + 1) & 0xFFFF
        return self._next_id


def open_serial(url: str) -> SerialDevice:
    """Entry point for the ``serial`` scheme and pyserial's own URL schemes."""
    return SerialDevice(url)
