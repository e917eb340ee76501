"""Pieces of the SCPI dialect both ends share: error codes, blocks, mnemonic matching."""

from devices.messages import Status

SCPI_ERRORS: dict[int, str] = {
    0: "No error",
    -104: "Data type error",
    -109: "Missing parameter",
    -113: "Undefined header",
    -160: "Block data error",
    -161: "Invalid block data",
    -221: "Settings conflict",
    -222: "Data out of range",
    -223: "Too much data",
    -224: "Illegal parameter value",
    -241: "Hardware missing",
    -300: "Device-specific error",
    -350: "Queue overflow",
}

STATUS_TO_SCPI: dict[Status, int] = {
    Status.UNKNOWN_TYPE: -113,
    Status.BAD_LENGTH: -161,
    Status.BAD_LAYER: -222,
    Status.BAD_PARAM: -222,
    Status.OUT_OF_RANGE: -222,
    Status.OUT_OF_BOUNDS: -222,
    Status.NOT_READY: -221,
    Status.BATCH_TOO_LARGE: -223,
    Status.UNSUPPORTED: -241,
    Status.VERSION: -300,
    Status.INTERNAL: -300,
}


def definite_block(data: bytes) -> bytes:
    """IEEE 488.2 definite-length block: ``#<digits><length><data>``."""
    length = str(len(data))
    return f"#{len(length)}{length}".encode() + data


def mnemonic_matches(given: str, mnemonic: str) -> bool:
    """SCPI header matching: the short form (the capitals) or the whole word, any case."""
    given, query = given.upper(), mnemonic.endswith("?")
    word = mnemonic.rstrip("?")
    short = "".join(c for c in word if not c.islower()) + ("?" if query else "")
    return given in (short.upper(), mnemonic.upper())
