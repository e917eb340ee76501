"""Firmware emulator: serves ``firmware_protocol.md`` with a simulated device behind it.

:class:`Firmware` turns request frames into reply frames exactly as a bench device's firmware
would (staging buffers, error queue, reply cache). :class:`FaultyLink` feeds it from a byte
stream and applies :class:`Faults` to prove the host survives a bad link; ``simulators.serve``
puts either dialect on a real pseudo-terminal or socket.
"""

import collections
import logging
import queue
import random
import threading
import time
import zlib
from collections.abc import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field

from devices.codec import REPLY_BIT, Frame, FrameDecoder, encode_frame
from devices.interface import Device, LayerParams, Perturbation
from devices.messages import (
    CAP_BIAS,
    CAP_INJECTION,
    CAP_REPLY_CACHE,
    CAP_SEEDED,
    HELLO_REQUEST,
    SET_INPUT_HEAD,
    SET_PARAMS_HEAD,
    SIGN_MINUS,
    SIGN_PLUS,
    DeviceStatus,
    Hello,
    MessageType,
    PerturbedForward,
    ProtocolError,
    Status,
    pack_error,
    pack_values,
    unpack_values,
)

log = logging.getLogger(__name__)

FIRMWARE_VERSION = "hil-emulator 1"
MAX_REQUEST = 1 << 16
MAX_IN_FLIGHT = 8
MAX_BATCH = 4096
RESPONSE_MS = 1000
ERROR_QUEUE = 16


class Faults(BaseModel):
    """What the emulated link does wrong, per frame and in both directions."""

    model_config = ConfigDict(extra="forbid")

    corrupt: float = Field(0.0, ge=0, le=1, description="chance a frame has one bit flipped")
    drop: float = Field(0.0, ge=0, le=1, description="chance a frame is lost")
    latency_ms: float = Field(0.0, ge=0, description="link latency: each reply leaves this long after its request")
    baud: int = Field(0, ge=0, description="throttle replies to baud/10 bytes per second; 0: as fast as the port")
    disconnect_after: int = Field(0, ge=0, description="unplug once after this many requests; 0: never")
    seed: int = Field(0, description="seed of the fault dice")


class ErrorQueue(collections.deque):
    """The device's error queue, ``SYST:ERR?`` semantics: oldest first; when full, the newest
    entry becomes ``-350 Queue overflow``."""

    def push(self, code: int, text: str) -> None:
        if len(self) >= ERROR_QUEUE:
            self[-1] = (-350, "Queue overflow")
        else:
            self.append((code, text))

    def take(self) -> tuple[int, str]:
        """The oldest error, removed; ``0, No error`` when empty."""
        return self.popleft() if self else (0, "No error")


def _whole_values(size: int) -> None:
    """Refuse values that are not a whole number of f32 (checked before anything else of a request)."""
    if size % 4:
        raise ProtocolError(f"{size} bytes is not a whole number of f32 values")


class _Buffer:
    """A staging buffer and which of its elements have been written."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.values = torch.zeros(shape)
        self.written = torch.zeros(shape, dtype=torch.bool)

    def write(self, offset: int, values: torch.Tensor) -> None:
        end = offset + len(values)
        if end > self.values.numel():
            raise ProtocolError(f"elements {offset}..{end - 1} run past the {self.values.numel()} of the array",
                                Status.OUT_OF_RANGE)
        self.values.view(-1)[offset:end] = values
        self.written.view(-1)[offset:end] = True

    @property
    def ready(self) -> bool:
        return bool(self.written.all())


class Firmware:
    """The device side of the protocol, backed by any :class:`~devices.interface.Device`."""

    def __init__(self, device: Device, bias_perturbation: bool = True, layer_input_injection: bool = True) -> None:
        """False hides a capability of the device: ``bias_perturbation`` a firmware without bit 3,
        ``layer_input_injection`` one without bit 1."""
        self.device = device
        inner = device.info()
        caps = inner.capabilities.model_copy(update={
            "bias_perturbation": inner.capabilities.bias_perturbation and bias_perturbation,
            "layer_input_injection": inner.capabilities.layer_input_injection and layer_input_injection})
        self.info = inner.model_copy(update={"firmware": FIRMWARE_VERSION, "capabilities": caps,
                                             "max_batch": min(inner.max_batch, MAX_BATCH)})
        self.frames_received = 0
        self.frames_rejected = 0
        self.replies_resent = 0
        self.reboot()

    def reboot(self) -> None:
        """Power-up state: nothing staged, empty error queue and reply cache (the array keeps its cells)."""
        self.params: list[dict[str, _Buffer]] = [{} for _ in self.info.layers]
        self.inputs: list[_Buffer | None] = [None] * len(self.info.layers)
        self.errors = ErrorQueue()
        self.cache: collections.OrderedDict[int, tuple[int, int, Frame]] = collections.OrderedDict()

    def handle(self, request: Frame) -> Frame:
        """Answer one intact request frame (a retry of a cached request is answered from the cache)."""
        self.frames_received += 1
        crc = zlib.crc32(request.payload)
        cached = self.cache.get(request.request_id)
        if cached is not None and cached[:2] == (request.type, crc):
            self.replies_resent += 1
            return cached[2]
        try:
            status, payload = Status.OK, self._execute(request)
        except ProtocolError as err:
            status, payload = err.status, b""
            self.errors.push(int(err.status), str(err))
        reply = Frame(request.type | REPLY_BIT, request.request_id, payload, int(status))
        self.cache[request.request_id] = (request.type, crc, reply)
        self.cache.move_to_end(request.request_id)
        while len(self.cache) > 2 * MAX_IN_FLIGHT:
            self.cache.popitem(last=False)
        return reply

    def _execute(self, request: Frame) -> bytes:
        try:
            kind = MessageType(request.type)
        except ValueError:
            raise ProtocolError(f"unknown message type 0x{request.type:02X}", Status.UNKNOWN_TYPE) from None
        handler: Callable[[bytes], bytes] = getattr(self, f"_on_{kind.name.lower()}")
        return handler(request.payload)

    def _on_hello(self, payload: bytes) -> bytes:
        if len(payload) < HELLO_REQUEST.size:
            raise ProtocolError("HELLO needs min and max version")
        low, high = HELLO_REQUEST.unpack_from(payload)
        if not low <= 1 <= high:
            raise ProtocolError(f"host speaks versions {low}..{high}, this device speaks 1", Status.VERSION)
        self.reboot()
        caps = CAP_SEEDED | CAP_REPLY_CACHE
        if self.info.capabilities.layer_input_injection:
            caps |= CAP_INJECTION
        if self.info.capabilities.bias_perturbation:
            caps |= CAP_BIAS
        return Hello(1, MAX_IN_FLIGHT, MAX_REQUEST, caps, RESPONSE_MS, self.info.identity,
                     FIRMWARE_VERSION).pack()

    def _on_info(self, payload: bytes) -> bytes:
        return self.info.model_dump_json().encode()

    def _on_set_params(self, payload: bytes) -> bytes:
        if len(payload) < SET_PARAMS_HEAD.size:
            raise ProtocolError("SET_PARAMS header is 8 bytes")
        _whole_values(len(payload) - SET_PARAMS_HEAD.size)
        layer, index, _, offset = SET_PARAMS_HEAD.unpack_from(payload)
        specs = self._layer(layer).params
        if index >= len(specs):
            raise ProtocolError(f"layer {layer} has {len(specs)} parameter arrays, not {index + 1}", Status.BAD_PARAM)
        spec = specs[index]
        values = unpack_values(payload[SET_PARAMS_HEAD.size:])
        if spec.periodic:
            outside = (values < spec.low) | (values >= spec.high)
            values[outside] = torch.remainder(values[outside] - spec.low, spec.high - spec.low) + spec.low
        elif not bool(((values >= spec.low) & (values <= spec.high)).all()):
            raise ProtocolError(f"layer {layer} {spec.name}: values outside [{spec.low}, {spec.high}]",
                                Status.OUT_OF_BOUNDS)
        buffer = self.params[layer].setdefault(spec.name, _Buffer(spec.shape))
        buffer.write(offset, values)
        return b""

    def _on_set_input(self, payload: bytes) -> bytes:
        if len(payload) < SET_INPUT_HEAD.size:
            raise ProtocolError("SET_INPUT header is 12 bytes")
        _whole_values(len(payload) - SET_INPUT_HEAD.size)
        layer, _, _, batch, offset = SET_INPUT_HEAD.unpack_from(payload)
        spec = self._layer(layer)
        if layer > 0 and not self.info.capabilities.layer_input_injection:
            raise ProtocolError("this device takes inputs for layer 0 only", Status.UNSUPPORTED)
        if not 0 < batch <= self.info.max_batch:
            raise ProtocolError(f"batch {batch} outside 1..{self.info.max_batch}", Status.BATCH_TOO_LARGE)
        values = unpack_values(payload[SET_INPUT_HEAD.size:])
        if offset + len(values) > batch * spec.inputs:
            raise ProtocolError(f"elements {offset}..{offset + len(values) - 1} run past the {batch * spec.inputs} "
                                f"of a batch of {batch}", Status.OUT_OF_RANGE)
        current = self.inputs[layer]  # every check passed: only now may the buffer change
        if current is None or current.values.shape[0] != batch:
            current = self.inputs[layer] = _Buffer((batch, spec.inputs))
        current.write(offset, values)
        return b""

    def _on_forward(self, payload: bytes) -> bytes:
        params = [self._staged(i) for i in range(len(self.info.layers))]
        acts = self.device.forward(params, self._input(0))
        return b"".join(pack_values(a) for a in acts)

    def _on_perturbed_forward(self, payload: bytes) -> bytes:
        request = PerturbedForward.unpack(payload)
        spec = self._layer(request.layer)
        if request.chunk is not None and request.chunk >= spec.n_chunks():
            raise ProtocolError(f"layer {request.layer} has {spec.n_chunks()} chunks, not {request.chunk + 1}",
                                Status.BAD_PARAM)
        if request.distribution == "bias" and not (self.info.capabilities.bias_perturbation and spec.has_bias):
            raise ProtocolError(f"layer {request.layer}: no bias perturbations on this device", Status.UNSUPPORTED)
        widest = max(p.high - p.low for p in spec.params)
        if not 0 <= request.eps <= widest:
            raise ProtocolError(f"eps {request.eps} outside [0, {widest:g}]", Status.OUT_OF_BOUNDS)
        perturbation = Perturbation(request.seeds, request.eps, request.distribution, request.chunk)
        plus, minus = self.device.perturbed_pairs(request.layer, self._staged(request.layer),
                                                  self._input(request.layer), perturbation)
        blocks = [plus] if request.signs & SIGN_PLUS else []
        if request.signs & SIGN_MINUS:
            blocks.append(minus)
        return b"".join(pack_values(b) for b in blocks)

    def _on_status(self, payload: bytes) -> bytes:
        counters = self.device.counters
        return DeviceStatus(len(self.errors), counters.queries, counters.param_writes, counters.device_seconds,
                            self.frames_received, self.frames_rejected, self.replies_resent).pack()

    def _on_error(self, payload: bytes) -> bytes:
        return pack_error(*self.errors.take())

    def _on_reset(self, payload: bytes) -> bytes:
        self.reboot()
        return b""

    def _on_ping(self, payload: bytes) -> bytes:
        return payload

    def _layer(self, layer: int):  # noqa: ANN202 - a LayerSpec
        if layer >= len(self.info.layers):
            raise ProtocolError(f"no layer {layer}; the device has {len(self.info.layers)}", Status.BAD_LAYER)
        return self.info.layers[layer]

    def _staged(self, layer: int) -> LayerParams:
        buffers = self.params[layer]
        for spec in self.info.layers[layer].params:
            if spec.name not in buffers or not buffers[spec.name].ready:
                raise ProtocolError(f"layer {layer} {spec.name} not fully written", Status.NOT_READY)
        return {name: b.values for name, b in buffers.items()}

    def _input(self, layer: int) -> torch.Tensor:
        buffer = self.inputs[layer]
        if buffer is None or not buffer.ready:
            raise ProtocolError(f"input of layer {layer} not fully written", Status.NOT_READY)
        return buffer.values


class FaultyLink:
    """Applies :class:`Faults` to the frames a :class:`Firmware` exchanges over one byte stream."""

    def __init__(self, firmware: Firmware, faults: Faults) -> None:
        self.firmware = firmware
        self.faults = faults
        self.dice = random.Random(faults.seed)
        self.requests = 0
        self.unplugged = False
        self.injected: collections.Counter[str] = collections.Counter()
        self.decoder = FrameDecoder(max_frame=2 * MAX_REQUEST)
        self._partial = bytearray()  # the request frame arriving, held until its delimiter decides its fate
        self._wire: queue.SimpleQueue | None = None

    def receive(self, data: bytes, send: Callable[[bytes], None]) -> bool:
        """Handle the requests ``data`` completes; False when the emulated cable is pulled."""
        for frame in self.decoder.feed(self._corrupt_requests(data)):
            self.firmware.frames_rejected = self.decoder.rejected
            if self.dice.random() < self.faults.drop:
                self.injected["dropped_requests"] += 1
                continue
            self.requests += 1
            reply = encode_frame(self.firmware.handle(frame))
            if self.dice.random() >= self.faults.drop:
                self._send(self._maybe_corrupt(reply, "corrupted_replies"), send)
            else:
                self.injected["dropped_replies"] += 1
            if self.faults.disconnect_after and not self.unplugged and self.requests >= self.faults.disconnect_after:
                self.unplugged = True
                return False
        self.firmware.frames_rejected = self.decoder.rejected
        return True

    def reset(self) -> None:
        """The stream was cut: forget a half-received frame."""
        self.decoder.reset()
        self._partial.clear()

    def _corrupt_requests(self, data: bytes) -> bytes:
        """The received bytes with each complete request frame corrupted at the ``corrupt`` rate, once per
        frame however the stream was chunked (a run longer than any frame passes as it is)."""
        out = bytearray()
        start = 0
        while (end := data.find(b"\x00", start)) >= 0:
            self._partial += data[start:end]
            out += self._maybe_corrupt(bytes(self._partial), "corrupted_requests") + b"\x00"
            self._partial.clear()
            start = end + 1
        self._partial += data[start:]
        if len(self._partial) > self.decoder.max_frame:
            out += self._partial
            self._partial.clear()
        return bytes(out)

    def _maybe_corrupt(self, frame: bytes, what: str) -> bytes:
        """One frame, with one bit flipped at the ``corrupt`` rate (never its delimiter)."""
        body = len(frame) - frame.endswith(b"\x00")
        if not body or self.dice.random() >= self.faults.corrupt:
            return frame
        self.injected[what] += 1
        flipped = bytearray(frame)
        flipped[self.dice.randrange(body)] ^= 1 << self.dice.randrange(8)
        return bytes(flipped)

    def _send(self, data: bytes, send: Callable[[bytes], None]) -> None:
        """Send now, or hand to the wire thread that models latency and baud rate."""
        if not (self.faults.latency_ms or self.faults.baud):
            send(data)
            return
        if self._wire is None:
            self._wire = queue.SimpleQueue()
            threading.Thread(target=self._wire_loop, args=(self._wire,), daemon=True).start()
        self._wire.put((time.monotonic() + self.faults.latency_ms / 1000, data, send))

    def _wire_loop(self, wire: "queue.SimpleQueue[tuple[float, bytes, Callable[[bytes], None]]]") -> None:
        """Replies leave in order, each no earlier than its due time, at most baud/10 bytes per second."""
        rate = self.faults.baud / 10
        while True:
            due, data, send = wire.get()
            time.sleep(max(0.0, due - time.monotonic()))
            step = 256 if rate else len(data)
            try:
                for start in range(0, len(data), step):
                    send(data[start:start + step])
                    if rate:
                        time.sleep(step / rate)
            except OSError:
                continue
