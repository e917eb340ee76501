"""The SCPI dialect of ``firmware_protocol.md`` (section 8), served by the firmware emulator.

:class:`ScpiLink` parses newline-terminated SCPI commands with IEEE 488.2 definite-length blocks
from a byte stream and runs each through the same :class:`~simulators.emulator.Firmware` the
binary protocol uses, so both dialects measure identically.
"""

import struct
from collections.abc import Callable

from devices.codec import Frame
from devices.directions import DIRECTIONS
from devices.messages import (
    ALL_CHUNKS,
    SET_INPUT_HEAD,
    SET_PARAMS_HEAD,
    MessageType,
    PerturbedForward,
    Status,
)
from devices.scpi import SCPI_ERRORS, STATUS_TO_SCPI, definite_block, mnemonic_matches
from simulators.emulator import ErrorQueue, Firmware

DISTRIBUTION_NAMES = {"RAD": "rademacher", "GAUS": "gaussian", "SPH": "sphere", "BIAS": "bias"}


class ScpiError(Exception):
    """A command failed: the SCPI error code and text to queue."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(f"{SCPI_ERRORS[code]}; {detail}" if detail else SCPI_ERRORS[code])
        self.code = code


def _ints(args: list[str], count: int) -> list[int]:
    if len(args) < count:
        raise ScpiError(-109, f"expected {count} numbers, got {len(args)}")
    try:
        return [int(a) for a in args[:count]]
    except ValueError:
        raise ScpiError(-104, f"expected integers, got {', '.join(args[:count])}") from None


class ScpiLink:
    """One SCPI session over a byte stream, backed by a firmware (and its simulated device)."""

    def __init__(self, firmware: Firmware, disconnect_after: int = 0) -> None:
        self.firmware = firmware
        self.disconnect_after = disconnect_after
        self.handled = 0
        self.errors = ErrorQueue()
        self._buffer = bytearray()
        self._next_id = 0
        self.commands: list[tuple[tuple[str, ...], Callable[[list[str], bytes | None], bytes | None]]] = [
            (("*IDN?",), self._idn), (("*RST",), self._rst), (("*CLS",), self._cls),
            (("SYSTem", "ERRor?"), self._error), (("SYSTem", "VERSion?"), lambda a, b: b"1999.0"),
            (("SYSTem", "PROTocol?"), lambda a, b: b"1"),
            (("NETWork", "INFO?"), self._info), (("NETWork", "PARameter"), self._set_params),
            (("NETWork", "INPut"), self._set_input), (("MEASure", "FORWard?"), self._forward),
            (("MEASure", "PERTurbed?"), self._perturbed),
        ]

    def receive(self, data: bytes, send: Callable[[bytes], None]) -> bool:
        """Run every complete command in ``data``; replies go to ``send``; False to emulate an unplug."""
        self._buffer += data
        while (command := self._next_command()) is not None:
            text, block = command
            reply = self._run(text.strip(), block)
            if reply is not None:
                send(reply + b"\n")
            self.handled += 1
            if self.handled == self.disconnect_after:
                return False
        return True

    def reset(self) -> None:
        """The stream was cut: forget a half-received command."""
        self._buffer.clear()

    def _next_command(self) -> tuple[str, bytes | None] | None:
        """Cut the next command (text, block) off the buffer; None until one is complete."""
        buf = self._buffer
        newline, hash_at = buf.find(b"\n"), buf.find(b"#")
        if hash_at < 0 or 0 <= newline < hash_at:
            if newline < 0:
                return None
            line = bytes(buf[:newline]).rstrip(b"\r")
            del buf[:newline + 1]
            return line.decode("ascii", errors="replace"), None
        if len(buf) < hash_at + 2:
            return None
        digits = chr(buf[hash_at + 1])
        if not digits.isdigit() or digits == "0":
            return self._drop_line(-160, "expected a definite-length block #<n><length><data>")
        n = int(digits)
        if len(buf) < hash_at + 2 + n:
            return None
        length_text = bytes(buf[hash_at + 2:hash_at + 2 + n])
        if not length_text.isdigit():
            return self._drop_line(-160, f"block length {length_text!r} is not {n} digits")
        start = hash_at + 2 + n
        end = start + int(length_text)
        if len(buf) < end + 1:
            return None
        terminator = end + 1 if buf[end:end + 1] == b"\n" else end + 2 if buf[end:end + 2] == b"\r\n" else -1
        if terminator < 0:
            return self._drop_line(-161, "block length does not match the data before the newline")
        text = bytes(buf[:hash_at]).decode("ascii", errors="replace")
        block = bytes(buf[start:end])
        del buf[:terminator]
        return text, block

    def _drop_line(self, code: int, detail: str) -> tuple[str, bytes | None] | None:
        """Discard up to the next newline after a malformed block; queue the error."""
        self.errors.push(code, str(ScpiError(code, detail)))
        newline = self._buffer.find(b"\n", self._buffer.find(b"#"))
        if newline < 0:
            self._buffer.clear()
            return None
        del self._buffer[:newline + 1]
        return self._next_command()

    def _run(self, text: str, block: bytes | None) -> bytes | None:
        if not text:
            return None
        header, _, rest = text.partition(" ")
        args = [a.strip() for a in rest.split(",")] if rest.strip() else []
        query = header.endswith("?")
        try:
            handler = self._find(header)
            return handler(args, block)
        except ScpiError as err:
            self.errors.push(err.code, str(err))
            return b"#10" if query and header.upper() not in ("*IDN?", "SYST:ERR?") else None

    def _find(self, header: str) -> Callable[[list[str], bytes | None], bytes | None]:
        parts = header.lstrip(":").split(":")
        for mnemonics, handler in self.commands:
            if len(parts) == len(mnemonics) and all(mnemonic_matches(p, m) for p, m in zip(parts, mnemonics)):
                return handler
        raise ScpiError(-113, f"no command {header!r}")

    def _firmware(self, kind: MessageType, payload: bytes = b"") -> bytes:
        """Run one binary-protocol request through the firmware; a refusal becomes a SCPI error."""
        self._next_id = (self._next_id + 1) & 0xFFFF
        reply = self.firmware.handle(Frame(int(kind), self._next_id, payload))
        if reply.status != Status.OK:
            text = self.firmware.errors.pop()[1] if self.firmware.errors else Status(reply.status).name
            raise ScpiError(STATUS_TO_SCPI[Status(reply.status)], text)
        return reply.payload

    # ----------------------------------------------------------------- commands

    def _idn(self, args: list[str], block: bytes | None) -> bytes:
        info = self.firmware.info
        return f"hil,{info.identity.replace(',', ' ')},0,{info.firmware.replace(',', ' ')}".encode()

    def _rst(self, args: list[str], block: bytes | None) -> None:
        self._firmware(MessageType.RESET)

    def _cls(self, args: list[str], block: bytes | None) -> None:
        self.errors.clear()

    def _error(self, args: list[str], block: bytes | None) -> bytes:
        code, text = self.errors.take()
        return f'{code},"{text.replace(chr(34), chr(39))}"'.encode()

    def _info(self, args: list[str], block: bytes | None) -> bytes:
        return definite_block(self._firmware(MessageType.INFO))

    def _set_params(self, args: list[str], block: bytes | None) -> None:
        layer, index, offset = _ints(args, 3)
        if block is None:
            raise ScpiError(-109, "NETW:PAR needs layer,index,offset,#<block of f32 values>")
        self._firmware(MessageType.SET_PARAMS, SET_PARAMS_HEAD.pack(layer, index, 0, offset) + block)

    def _set_input(self, args: list[str], block: bytes | None) -> None:
        layer, batch, offset = _ints(args, 3)
        if block is None:
            raise ScpiError(-109, "NETW:INP needs layer,batch,offset,#<block of f32 values>")
        self._firmware(MessageType.SET_INPUT, SET_INPUT_HEAD.pack(layer, 0, 0, batch, offset) + block)

    def _forward(self, args: list[str], block: bytes | None) -> bytes:
        return definite_block(self._firmware(MessageType.FORWARD))

    def _perturbed(self, args: list[str], block: bytes | None) -> bytes:
        if len(args) < 6:
            raise ScpiError(-109, "MEAS:PERT? needs layer,RAD|GAUS|SPH|BIAS,signs,eps,chunk,seed[,seed...]")
        layer, signs = _ints([args[0], args[2]], 2)
        distribution = DISTRIBUTION_NAMES.get(args[1].upper())
        if distribution is None:
            raise ScpiError(-224, f"distribution {args[1]!r}; use RAD, GAUS, SPH or BIAS")
        try:
            eps = float(args[3])
            chunk = int(args[4])
            seeds = tuple(int(s) for s in args[5:])
        except ValueError:
            raise ScpiError(-104, "eps must be a number, chunk and seeds integers") from None
        if not all(0 <= s <= 0xFFFFFFFF for s in seeds) or not 0 <= layer < 256 or not 0 <= signs < 256:
            raise ScpiError(-222, "layer and signs take 0..255, seeds 0..4294967295")
        chunk_code = ALL_CHUNKS if chunk < 0 else chunk
        try:
            payload = PerturbedForward.FIXED.pack(layer, DIRECTIONS.index(distribution), signs, 0, eps,
                                                  chunk_code, len(seeds), 0)
        except struct.error:
            raise ScpiError(-222, "chunk or seed count out of range") from None
        payload += struct.pack(f"<{len(seeds)}I", *seeds)
        return definite_block(self._firmware(MessageType.PERTURBED_FORWARD, payload))
