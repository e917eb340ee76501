"""A bench device over USB serial (or any pyserial URL), speaking ``firmware_protocol.md``.

URL forms::

    serial:///dev/ttyACM0?baud=115200      a port path
    serial://2E8A:000A                      the first USB port with this VID:PID
    serial://2E8A:000A/E6614C311B4A2F2B     ... and this serial number
    socket://localhost:5555                 pyserial's TCP transport (also rfc2217://, hwgrep://, loop://)

Options (URL query): ``baud`` (also the slowest rate at which the host waits for a reply's bytes),
``timeout`` (seconds of silence before a resend; default the device's ``response_ms`` + 0.25 s),
``retries`` (resends per request before the link counts as lost, 5), ``reconnects`` (reopen
attempts after an unplug, 10), ``pipeline`` (1: up to the device's max_in_flight requests in
flight; 0: one at a time).

Timing (``firmware_protocol.md`` section 3): a lost frame is noticed when a reply to something sent
later arrives first; when the link goes quiet for twice the device's smoothed response time (at
least 10 ms), the host sends a PING as a loss probe, whose reply overtaking a missing one proves the
loss within a round trip. ``timeout`` of
silence, or a reply overdue by ``timeout`` plus the time its largest size takes at ``baud``
whatever bytes arrive meanwhile (a babbling device), also resends. The receive buffer holds at most
the largest reply the requests in flight can get.
"""

import collections
import logging
import select
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import serial
import serial.tools.list_ports
from pydantic import BaseModel, ConfigDict, Field

from devices.bench import BenchDevice, InputWrite, ParamWrite
from devices.codec import REPLY_BIT, Frame, FrameDecoder, encode_frame, wire_size
from devices.errors import CapabilityError, DeviceConfigError, DeviceURLError, LinkError
from devices.messages import (
    CAP_BIAS,
    CAP_INJECTION,
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

POLL_SECONDS = 0.005
READ_CHUNK = 1 << 20
PROBE_FLOOR = 0.01  # seconds: the shortest quiet spell after which a loss probe goes out
SMALL_REPLY = 1 << 12  # largest HELLO, STATUS, ERROR or unknown-type reply payload the host accepts
INFO_REPLY = 1 << 20  # largest INFO reply payload the host accepts
EMPTY_REPLIES = {MessageType.SET_PARAMS, MessageType.SET_INPUT, MessageType.RESET}
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


class RoundTrips:
    """The device's smoothed response time (RFC 6298's SRTT), measured on replies to requests sent
    once (Karn's rule), and the quiet spell after which a loss probe goes out: twice that, as TCP's
    tail loss probe waits (RFC 8985)."""

    def __init__(self) -> None:
        self.srtt: float | None = None

    def sample(self, seconds: float) -> None:
        """Take one response time: from the request (or the reply before it) to its reply's first byte."""
        self.srtt = seconds if self.srtt is None else self.srtt + 0.125 * (seconds - self.srtt)

    def probe_timeout(self, floor: float, ceiling: float) -> float:
        """``2 srtt`` within ``[floor, ceiling]``; the ceiling before any sample."""
        return ceiling if self.srtt is None else min(ceiling, max(floor, 2 * self.srtt))


@dataclass
class _Request:
    """One request of an exchange: its frame, the largest reply it may get, and its fate."""

    frame: Frame
    wire: bytes
    limit: int
    first_seq: int = -1
    last_seq: int = -1
    sent_at: float = 0.0
    attempts: int = 0
    reply: Frame | None = None


def _name(kind: int) -> str:
    return MessageType(kind).name if kind in MessageType._value2member_map_ else f"type 0x{kind:02X}"


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
        self._seq = 0  # counts transmissions, so replies tell what was sent before what
        self._fd: int | None = None
        self._decoder = FrameDecoder()
        self._round_trips = RoundTrips()
        self._probes: dict[int, tuple[int, float]] = {}  # loss probes in flight: id -> (seq, sent at)
        self._since = (0, 0)  # bytes received and frames rejected when the current exchange began
        self.port = self._open_port()
        try:
            try:
                self.hello = self._hello()
            except _LinkLost as lost:
                raise LinkError(f"{url}: no device answered the handshake ({lost}); check that it is powered, "
                                "that its firmware speaks firmware_protocol.md, and the port and baud rate") from None
            self.identity = self.hello.identity
            self.reconnect_tries = self.options.reconnects
            (info_reply,) = self.transact([(MessageType.INFO, b"")])
            info = self._describe(info_reply.payload, "the INFO reply")
            # on this link HELLO's bits are what the firmware does, whatever its INFO text says
            caps = self.hello.capabilities
            self._info = info.model_copy(update={"capabilities": info.capabilities.model_copy(update={
                "seeded_perturbations": bool(caps & CAP_SEEDED),
                "layer_input_injection": bool(caps & CAP_INJECTION),
                "bias_perturbation": bool(caps & CAP_BIAS)})})
            self._require_capabilities()
        except Exception:
            self.close()
            raise
        self._forget()
        log.info("opened %s: %s, firmware %s", url, self.hello.identity, self.hello.firmware)

    # ----------------------------------------------------------------- link primitives

    def _send_writes(self, params: list[ParamWrite], inputs: list[InputWrite]) -> None:
        per_frame = (self.hello.max_request - SET_INPUT_HEAD.size) // 4
        requests: list[tuple[int, bytes]] = []
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

    def transact(self, requests: list[tuple[int, bytes]], check: bool = True) -> list[Frame]:
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

    def _raise_refusal(self, kind: int, status: int) -> None:
        texts = collections.Counter(text for _, text in self.errors())  # one entry per refused frame
        details = "; ".join(text if n == 1 else f"{text} (x{n})" for text, n in texts.items())
        name = Status(status).name if status in Status._value2member_map_ else str(status)
        message = f"{self.url}: device refused {_name(kind)} ({name}): {details or 'no details'}"
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
        self._probes.clear()
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

    def _reply_limit(self, kind: int, payload: bytes) -> int:
        """The largest reply payload the host accepts to a request (``firmware_protocol.md`` section 3):
        exact for measurements and echoes, from the batch the host set (else ``max_batch``)."""
        if kind in EMPTY_REPLIES:
            return 0
        if kind == MessageType.PING:
            return len(payload)
        if kind == MessageType.INFO:
            return INFO_REPLY
        if self._info is None or kind not in (MessageType.FORWARD, MessageType.PERTURBED_FORWARD):
            return SMALL_REPLY
        layers = self._info.layers
        if kind == MessageType.FORWARD:
            return 4 * self._batch(0) * sum(spec.outputs for spec in layers)
        try:
            request = PerturbedForward.unpack(payload)
        except ProtocolError:
            return SMALL_REPLY  # the device refuses it with an empty reply
        if request.layer >= len(layers):
            return SMALL_REPLY
        return 4 * request.queries * self._batch(request.layer) * layers[request.layer].outputs

    def _batch(self, layer: int) -> int:
        held = self._inputs[layer] if layer < len(self._inputs) else None
        return self.info().max_batch if held is None else len(held)

    def _exchange(self, requests: list[tuple[int, bytes]], window: int, timeout: float) -> list[Frame]:
        """One attempt at a batch of requests over the current port; _LinkLost if the port fails.

        Up to ``window`` requests (loss probes included) are in flight. A request is sent again
        when a reply to anything sent after it arrives first (it or its reply was lost), when
        nothing at all has arrived for ``timeout``, or when its reply is overdue (``timeout`` plus
        the time its largest size takes at ``baud``, whatever bytes arrived meanwhile). A quiet
        spell of twice the smoothed response time sends a loss probe (a PING) behind them.
        """
        todo = []
        for kind, payload in requests:
            frame = Frame(int(kind), self._new_id(), payload)
            todo.append(_Request(frame, encode_frame(frame), self._reply_limit(kind, payload)))
        by_id = {r.frame.request_id: r for r in todo}
        self._decoder.max_frame = wire_size(max(SMALL_REPLY, *(r.limit for r in todo)))
        self._since = (self.stats.bytes_received, self._decoder.rejected)
        outstanding: list[_Request] = []
        next_up = 0
        heard = last_request = last_sent = last_reply = last_frame = time.perf_counter()
        began: float | None = None  # when the frame now arriving began to arrive
        probes = 0  # loss probes since the last intact frame: each waits twice as long as the one before
        while next_up < len(todo) or outstanding:
            self._expire_probes(time.perf_counter(), timeout)
            while next_up < len(todo) and len(outstanding) + len(self._probes) < window:
                self._transmit(todo[next_up])
                outstanding.append(todo[next_up])
                next_up += 1
                last_request = last_sent = todo[next_up - 1].sent_at
            data = self._read()
            now = time.perf_counter()
            if data:
                heard = now
                began = began if began is not None and self._decoder.pending else now
            rejected = self._decoder.rejected
            frames = self._decoder.feed(data)
            for k, reply in enumerate(frames):
                started = began if k == 0 and began is not None else now
                last_frame_before, last_frame, probes = last_frame, now, 0
                if reply.request_id in self._probes and reply.type == MessageType.PING | REPLY_BIT:
                    probe_seq, _ = self._probes.pop(reply.request_id)
                    self._resend_overtaken(outstanding, probe_seq)
                    continue
                r = by_id.get(reply.request_id)
                if r is not None and not reply.is_reply and reply.payload == r.frame.payload:
                    raise LinkError(f"{self.url}: the port echoes our own requests back (a loopback such as "
                                    "loop:// or shorted RX/TX); no device is answering")
                if r is None or r.reply is not None or reply.type != r.frame.type | REPLY_BIT:
                    continue
                r.reply = reply
                outstanding.remove(r)
                if r.attempts == 0:
                    self._round_trips.sample(max(0.0, started - max(r.sent_at, last_frame_before)))
                self.stats.round_trips.append(now - r.sent_at)
                log.debug("<- %s id %d, status %d, %d bytes, %.2f ms", _name(r.frame.type), reply.request_id,
                          reply.status, len(reply.payload), 1000 * (now - r.sent_at))
                self.stats.frames_received += 1
                self.stats.payload_bytes_received += len(reply.payload)
                last_reply = now
                self._resend_overtaken(outstanding, r.first_seq)
            if data:
                began = None if not self._decoder.pending else began if not frames else now
            self.stats.crc_errors += self._decoder.rejected - rejected
            if not outstanding:
                continue
            head = outstanding[0]
            overdue = now - max(head.sent_at, last_reply) > timeout + self._transfer_seconds(head.limit)
            if now - max(heard, last_request) > timeout or overdue:
                self.stats.timeouts += 1
                for r in list(outstanding):
                    self._resend(r, "overdue" if overdue else "timeout")
                last_request = last_sent = time.perf_counter()
                continue
            wait = self._round_trips.probe_timeout(PROBE_FLOOR, timeout) * 2**probes
            if (next_up == len(todo) and len(outstanding) + len(self._probes) < window
                    and now - max(heard, last_sent) > wait):
                self._probe()
                probes += 1
                last_sent = time.perf_counter()
        return [r.reply for r in todo]  # type: ignore[misc]

    def _transfer_seconds(self, payload: int) -> float:
        """How long a reply of ``payload`` bytes takes on the wire at the ``baud`` rate (8N1)."""
        return 10 * wire_size(payload) / self.options.baud

    def _transmit(self, r: _Request) -> None:
        self._seq += 1
        if r.first_seq < 0:
            r.first_seq = self._seq
        r.last_seq = self._seq
        self._send(r.wire, r.frame)
        r.sent_at = time.perf_counter()

    def _probe(self) -> None:
        """Send a PING behind the outstanding requests: its reply arriving first proves they were lost."""
        frame = Frame(int(MessageType.PING), self._new_id())
        self._seq += 1
        self._send(encode_frame(frame), frame)
        self._probes[frame.request_id] = (self._seq, time.perf_counter())
        self.stats.probes += 1

    def _expire_probes(self, now: float, timeout: float) -> None:
        """Forget probes unanswered for ``timeout``: lost, they no longer hold a place in flight."""
        for request_id, (_, sent_at) in list(self._probes.items()):
            if now - sent_at > timeout:
                del self._probes[request_id]

    def _resend_overtaken(self, outstanding: list[_Request], seq: int) -> None:
        """A reply to transmission ``seq`` arrived: whatever was last sent before it is lost (the device
        answers in order). Resend those requests; forget those probes."""
        for request_id, (probe_seq, _) in list(self._probes.items()):
            if probe_seq < seq:
                del self._probes[request_id]
        for r in list(outstanding):
            if r.last_seq < seq:
                self._resend(r, "overtaken")

    def _resend(self, r: _Request, why: str) -> None:
        r.attempts += 1
        if r.attempts > self.options.retries:
            received = self.stats.bytes_received - self._since[0]
            rejected = self._decoder.rejected - self._since[1]
            heard = (f"{received} bytes arrived meanwhile, {rejected} damaged or overlong frames among them"
                     if received else "nothing arrived")
            raise _LinkLost(f"no intact reply to {_name(r.frame.type)} after {r.attempts} tries ({heard})")
        self.stats.resends += 1
        log.debug("resend %s id %d (attempt %d, %s)", _name(r.frame.type), r.frame.request_id, r.attempts, why)
        self._transmit(r)

    def _send(self, wire: bytes, frame: Frame) -> None:
        log.debug("-> %s id %d, %d bytes", _name(frame.type), frame.request_id, len(frame.payload))
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
