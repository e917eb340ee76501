"""Payload layouts of the bench-device protocol (``firmware_protocol.md`` sections 4 and 5).

Both ends use these: the host's :class:`~devices.serial_device.SerialDevice` and the firmware
emulator. Unpacking validates sizes and raises :class:`ProtocolError` naming what was wrong.
"""

import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch

from devices.directions import DIRECTIONS, Direction
from devices.errors import LinkError


class MessageType(IntEnum):
    HELLO = 0x01
    INFO = 0x02
    SET_PARAMS = 0x03
    SET_INPUT = 0x04
    FORWARD = 0x05
    PERTURBED_FORWARD = 0x06
    STATUS = 0x07
    ERROR = 0x08
    RESET = 0x09
    PING = 0x0A


class Status(IntEnum):
    OK = 0
    UNKNOWN_TYPE = 1
    BAD_LENGTH = 2
    BAD_LAYER = 3
    BAD_PARAM = 4
    OUT_OF_RANGE = 5
    OUT_OF_BOUNDS = 6
    NOT_READY = 7
    BATCH_TOO_LARGE = 8
    UNSUPPORTED = 9
    VERSION = 10
    INTERNAL = 11


CAP_SEEDED = 1 << 0
CAP_INJECTION = 1 << 1
CAP_REPLY_CACHE = 1 << 2
CAP_BIAS = 1 << 3
ALL_CHUNKS = 0xFFFFFFFF
SIGN_PLUS, SIGN_MINUS = 1, 2
VALUE = np.dtype("<f4")

HELLO_REQUEST = struct.Struct("<BB")
SET_PARAMS_HEAD = struct.Struct("<BBHI")
SET_INPUT_HEAD = struct.Struct("<BBHII")


class ProtocolError(LinkError):
    """A message was well framed but its content is wrong, or the device answered a failure."""

    def __init__(self, message: str, status: Status = Status.BAD_LENGTH) -> None:
        super().__init__(message)
        self.status = status


def pack_values(values: torch.Tensor) -> bytes:
    """A tensor's elements as little-endian f32, row-major."""
    return values.detach().to("cpu", torch.float32).contiguous().numpy().astype(VALUE, copy=False).tobytes()


def unpack_values(data: bytes | memoryview, count: int | None = None) -> torch.Tensor:
    """Little-endian f32 bytes as a float32 tensor; ``count`` checks the number of values."""
    if len(data) % VALUE.itemsize:
        raise ProtocolError(f"{len(data)} bytes is not a whole number of f32 values")
    if count is not None and len(data) != count * VALUE.itemsize:
        raise ProtocolError(f"expected {count} values, got {len(data) // VALUE.itemsize}")
    return torch.from_numpy(np.frombuffer(data, dtype=VALUE).astype(np.float32))


def _text(data: bytes, offset: int) -> tuple[str, int]:
    if offset + 2 > len(data):
        raise ProtocolError("text field runs past the payload")
    (n,) = struct.unpack_from("<H", data, offset)
    end = offset + 2 + n
    if end > len(data):
        raise ProtocolError("text field runs past the payload")
    return data[offset + 2:end].decode("utf-8", errors="replace"), end


def _short(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise ProtocolError(f"{what} payload of {len(data)} bytes, needs at least {size}")


@dataclass(frozen=True)
class Hello:
    """The HELLO reply: what the device is and the limits the host must respect."""

    version: int
    max_in_flight: int
    max_request: int
    capabilities: int
    response_ms: int
    identity: str
    firmware: str

    FIXED = struct.Struct("<BBHIII")

    def pack(self) -> bytes:
        fixed = self.FIXED.pack(self.version, 0, self.max_in_flight, self.max_request, self.capabilities,
                                self.response_ms)
        texts = b"".join(struct.pack("<H", len(t)) + t for t in (self.identity.encode(), self.firmware.encode()))
        return fixed + texts

    @classmethod
    def unpack(cls, data: bytes) -> "Hello":
        _short(data, cls.FIXED.size + 4, "HELLO reply")
        version, _, in_flight, max_request, caps, response_ms = cls.FIXED.unpack_from(data)
        identity, at = _text(data, cls.FIXED.size)
        firmware, _ = _text(data, at)
        if in_flight < 1 or max_request < 64:
            raise ProtocolError(f"HELLO declares max_in_flight {in_flight} and max_request {max_request}; "
                                "need at least 1 and 64")
        return cls(version, in_flight, max_request, caps, response_ms, identity, firmware)


@dataclass(frozen=True)
class PerturbedForward:
    """The PERTURBED_FORWARD request: evaluate one layer at base +- eps times seeded directions."""

    layer: int
    distribution: Direction
    signs: int
    eps: float
    chunk: int | None
    seeds: tuple[int, ...]

    FIXED = struct.Struct("<BBBBdIHH")

    def pack(self) -> bytes:
        chunk = ALL_CHUNKS if self.chunk is None else self.chunk
        return self.FIXED.pack(self.layer, DIRECTIONS.index(self.distribution), self.signs, 0, self.eps,
                               chunk, len(self.seeds), 0) + struct.pack(f"<{len(self.seeds)}I", *self.seeds)

    @classmethod
    def unpack(cls, data: bytes) -> "PerturbedForward":
        _short(data, cls.FIXED.size, "PERTURBED_FORWARD")
        layer, dist, signs, _, eps, chunk, count, _ = cls.FIXED.unpack_from(data)
        if len(data) != cls.FIXED.size + 4 * count:
            raise ProtocolError(f"PERTURBED_FORWARD names {count} seeds but carries "
                                f"{(len(data) - cls.FIXED.size) / 4:g}")
        if dist >= len(DIRECTIONS):
            raise ProtocolError(f"unknown distribution code {dist}", Status.UNSUPPORTED)
        if not signs or signs & ~(SIGN_PLUS | SIGN_MINUS) or count == 0:
            raise ProtocolError("PERTURBED_FORWARD needs at least one sign (bits 0-1) and one seed")
        seeds = struct.unpack_from(f"<{count}I", data, cls.FIXED.size)
        return cls(layer, DIRECTIONS[dist], signs, eps, None if chunk == ALL_CHUNKS else chunk, seeds)

    @property
    def queries(self) -> int:
        return len(self.seeds) * bin(self.signs).count("1")


@dataclass(frozen=True)
class DeviceStatus:
    """The STATUS reply: the device's own counters."""

    errors: int
    queries: int
    param_writes: int
    device_seconds: float
    frames_received: int
    frames_rejected: int
    replies_resent: int

    FIXED = struct.Struct("<IIQQdQQQ")

    def pack(self) -> bytes:
        return self.FIXED.pack(self.errors, 0, self.queries, self.param_writes, self.device_seconds,
                               self.frames_received, self.frames_rejected, self.replies_resent)

    @classmethod
    def unpack(cls, data: bytes) -> "DeviceStatus":
        _short(data, cls.FIXED.size, "STATUS reply")
        errors, _, queries, writes, seconds, received, rejected, resent = cls.FIXED.unpack_from(data)
        return cls(errors, queries, writes, seconds, received, rejected, resent)


def pack_error(code: int, text: str) -> bytes:
    """An ERROR reply: the oldest queued error."""
    return struct.pack("<i", code) + text.encode()


def unpack_error(data: bytes) -> tuple[int, str]:
    _short(data, 4, "ERROR reply")
    (code,) = struct.unpack_from("<i", data)
    return code, data[4:].decode("utf-8", errors="replace")
