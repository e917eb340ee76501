"""Frames of the bench-device protocol: COBS, a 12-byte header, CRC-32, a 0x00 delimiter.

``encode_frame`` and :class:`FrameDecoder` implement section 2 of ``firmware_protocol.md``. The
decoder never returns a corrupted frame and never raises anything but :class:`CodecError`.
"""

import struct
import zlib
from dataclasses import dataclass

from cobs import cobs

from devices.errors import LinkError

VERSION = 1
DELIMITER = b"\x00"
HEADER = struct.Struct("<BBHHHI")
CRC = struct.Struct("<I")
REPLY_BIT = 0x80
MIN_FRAME = HEADER.size + CRC.size


class CodecError(LinkError):
    """A frame could not be decoded: bad COBS, wrong length, CRC mismatch, unknown version."""


@dataclass(frozen=True)
class Frame:
    """One decoded message: the header fields and the payload."""

    type: int
    request_id: int
    payload: bytes = b""
    status: int = 0
    flags: int = 0
    version: int = VERSION

    @property
    def is_reply(self) -> bool:
        return bool(self.type & REPLY_BIT)


def encode_frame(frame: Frame) -> bytes:
    """The bytes on the wire for ``frame``, delimiter included."""
    body = HEADER.pack(frame.version, frame.type, frame.request_id, frame.status, frame.flags,
                       len(frame.payload)) + frame.payload
    return cobs.encode(body + CRC.pack(zlib.crc32(body))) + DELIMITER


def wire_size(payload: int) -> int:
    """The most bytes a frame with ``payload`` payload bytes takes on the wire, delimiter included."""
    body = HEADER.size + payload + CRC.size
    return body + body // 254 + 2


def decode_frame(packet: bytes) -> Frame:
    """Decode one frame's bytes (without the delimiter); :class:`CodecError` if it is damaged."""
    try:
        raw = cobs.decode(packet)
    except cobs.DecodeError as err:
        raise CodecError(f"bad COBS encoding: {err}") from None
    if len(raw) < MIN_FRAME:
        raise CodecError(f"frame of {len(raw)} bytes is shorter than the {MIN_FRAME}-byte minimum")
    body, (crc,) = raw[:-CRC.size], CRC.unpack(raw[-CRC.size:])
    if zlib.crc32(body) != crc:
        raise CodecError("CRC mismatch")
    version, kind, request_id, status, flags, length = HEADER.unpack_from(body)
    if length != len(body) - HEADER.size:
        raise CodecError(f"header says {length} payload bytes, frame holds {len(body) - HEADER.size}")
    if version != VERSION:
        raise CodecError(f"protocol version {version}, this host speaks {VERSION}")
    return Frame(kind, request_id, bytes(body[HEADER.size:]), status, flags, version)


class FrameDecoder:
    """Splits a byte stream into frames, dropping damaged ones and resyncing at each 0x00.

    ``max_frame`` bounds the bytes buffered while waiting for a delimiter: a longer run is
    garbage, counted as rejected as soon as it passes the bound, and dropped up to the next
    delimiter, so a sender that never sends one cannot grow the buffer.
    """

    def __init__(self, max_frame: int = 1 << 31) -> None:
        self.max_frame = max_frame
        self.rejected = 0
        self.frames = 0
        self._buffer = bytearray()
        self._overflowed = False

    @property
    def pending(self) -> int:
        """Bytes of a frame in progress (received since the last delimiter, not yet dropped)."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget a half-received frame (the stream was cut); the counts stay."""
        self._buffer.clear()
        self._overflowed = False

    def feed(self, data: bytes) -> list[Frame]:
        """Take bytes as they arrive; return the intact frames they complete."""
        out: list[Frame] = []
        start = 0
        while (end := data.find(DELIMITER, start)) >= 0:
            packet = bytes(self._buffer + data[start:end]) if self._buffer else data[start:end]
            self._buffer.clear()
            if self._overflowed:  # the end of an overlong run, counted when it passed the bound
                self._overflowed = False
            elif len(packet) > self.max_frame:
                self.rejected += 1
            elif packet:
                try:
                    out.append(decode_frame(packet))
                    self.frames += 1
                except CodecError:
                    self.rejected += 1
            start = end + 1
        if not self._overflowed:
            self._buffer += data[start:]
            if len(self._buffer) > self.max_frame:
                self._overflowed = True
                self.rejected += 1
                self._buffer.clear()
        return out
