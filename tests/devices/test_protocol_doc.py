"""firmware_protocol.md is normative: its numbers must be what the code does."""

import re
import zlib
from pathlib import Path

import pytest
import torch

from devices import LayerSpec, ParamSpec, Perturbation
from devices.codec import HEADER
from devices.directions import directions, words
from devices.messages import MessageType, Status

DOC = (Path(__file__).parents[2] / "firmware_protocol.md").read_text()


def _rows(heading: str) -> list[list[str]]:
    """Table rows (cells) of the first table after a line containing ``heading``."""
    lines = DOC[DOC.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows


def test_word_test_vectors():
    rows = _rows("**Test vectors**")
    assert len(rows) == 3
    for seed, *expected in rows:
        got = words(torch.tensor([int(seed, 16)]), 4)[0]
        assert [f"0x{int(w):08X}" for w in got] == expected


def test_distribution_test_vectors():
    rows = _rows("| seed | distribution |")
    assert len(rows) == 5
    for seed, distribution, size, first in rows:
        if distribution == "bias":  # a dense layer of 3 inputs: its chunk is a weight row, then the bias
            spec = LayerSpec(kind="dense", inputs=3, outputs=2, activation="relu", params=(
                ParamSpec(name="weight", shape=(2, 3), low=-1, high=1),
                ParamSpec(name="bias", shape=(2,), low=-1, high=1)))
            v = Perturbation((0,), 1.0, "bias").vectors(spec).flatten()
            assert size.startswith(f"{spec.chunk_size()} (dense, 3 inputs)")
            assert v.tolist() == [float(e) for e in first.split(",")[:8]]
            continue
        v = directions([int(seed, 16)], 1, int(size), distribution, dtype=torch.float64)[0, 0]
        if distribution == "rademacher":
            assert "".join("+" if e > 0 else "-" for e in v.tolist()) == first
        else:
            assert v.tolist() == pytest.approx([float(e) for e in first.split(",")], abs=1e-7)


def test_crc_check_value_and_header_size():
    assert f"0x{zlib.crc32(b'123456789'):08X}" in DOC
    assert f"header[{HEADER.size}]" in DOC and f"Header ({HEADER.size} bytes)" in DOC


def test_every_message_type_and_status_code_is_documented():
    for kind in MessageType:
        assert f"### 0x{kind.value:02X} {kind.name}" in DOC
    codes = {int(code): name for code, name, _ in _rows("## 5. Status codes")}
    assert codes == {s.value: s.name for s in Status}


def test_header_table_matches_the_struct():
    rows = _rows("### Header")
    sizes = {"u8": 1, "u16": 2, "u32": 4}
    assert [int(offset) for offset, *_ in rows] == [sum(sizes[r[1]] for r in rows[:i]) for i in range(len(rows))]
    assert re.sub(r"[^BHI]", "", HEADER.format) == "".join({"u8": "B", "u16": "H", "u32": "I"}[r[1]] for r in rows)


def test_scpi_error_codes_are_the_documented_ones():
    from devices.scpi import SCPI_ERRORS

    documented = {int(code): text for code, text, _ in _rows("| code | text | raised for |")}
    assert documented == {code: text for code, text in SCPI_ERRORS.items() if code != 0}
