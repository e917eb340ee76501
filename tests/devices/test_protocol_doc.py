"""firmware_protocol.md is normative: its numbers must be what the code does."""

import json
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

from devices import LayerSpec, ParamSpec, Perturbation
from devices.codec import HEADER, Frame
from devices.directions import directions, words
from devices.info import Capabilities, ConvShape, DeviceInfo
from devices.messages import (
    ALL_CHUNKS,
    HELLO_REQUEST,
    SET_INPUT_HEAD,
    SET_PARAMS_HEAD,
    MessageType,
    PerturbedForward,
    Status,
    pack_values,
    unpack_values,
)
from devices.serial_device import INFO_REPLY, PROBE_FLOOR, SMALL_REPLY, SerialOptions
from simulators.emulator import ERROR_QUEUE, Firmware
from simulators.registry import open_sim

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "firmware_protocol.md").read_text()
FLAT = " ".join(DOC.split())  # the document with its line breaks undone, for phrases that wrap


def doc_table(heading: str) -> list[list[str]]:
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
    rows = doc_table("**Test vectors**")
    assert len(rows) == 3
    for seed, *expected in rows:
        got = words(torch.tensor([int(seed, 16)]), 4)[0]
        assert [f"0x{int(w):08X}" for w in got] == expected


def test_distribution_test_vectors():
    rows = doc_table("| seed | distribution |")
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
    codes = {int(code): name for code, name, _ in doc_table("## 5. Status codes")}
    assert codes == {s.value: s.name for s in Status}


def test_header_table_matches_the_struct():
    rows = doc_table("### Header")
    sizes = {"u8": 1, "u16": 2, "u32": 4}
    assert [int(offset) for offset, *_ in rows] == [sum(sizes[r[1]] for r in rows[:i]) for i in range(len(rows))]
    assert re.sub(r"[^BHI]", "", HEADER.format) == "".join({"u8": "B", "u16": "H", "u32": "I"}[r[1]] for r in rows)


def test_scpi_error_codes_are_the_documented_ones():
    from devices.scpi import SCPI_ERRORS

    documented = {int(code): text for code, text, _ in doc_table("| code | text | raised for |")}
    assert documented == {code: text for code, text in SCPI_ERRORS.items() if code != 0}


def test_the_host_limits_and_timing_are_the_documented_ones():
    assert SMALL_REPLY == 4 * 1024 and "4 KiB for every other reply" in FLAT
    assert INFO_REPLY == 1 << 20 and "1 MiB for INFO" in FLAT
    assert PROBE_FLOOR == 0.01 and "at least 10 ms, at most `timeout`" in FLAT
    assert SerialOptions().retries == 5 and "After 5 resends of one request" in FLAT
    assert "by default `response_ms + 250 ms`" in FLAT  # SerialDevice.transact's default timeout


def test_the_error_queue_holds_exactly_the_documented_depth_in_both_implementations():
    depth = int(re.search(r"queue holds exactly (\d+) entries", FLAT).group(1))
    firmware = (ROOT / "firmware/core/device.c").read_text()
    assert depth == ERROR_QUEUE == int(re.search(r"ERROR_QUEUE = (\d+)", firmware).group(1))
    assert f"replaces the newest entry when {depth} are queued" in DOC  # the SCPI table says the same


MODELS: dict[str, type[BaseModel]] = {"device": DeviceInfo, "capabilities": Capabilities, "layer": LayerSpec,
                                      "param": ParamSpec, "conv": ConvShape}


def test_the_info_keys_their_defaults_and_which_are_required_are_the_hosts():
    rows = doc_table("| object | key | required | default | meaning |")
    for name, model in MODELS.items():
        documented = {key: (required, default) for obj, key, required, default, _ in rows if obj == name}
        assert documented.keys() == model.model_fields.keys(), name
        for key, (required, default) in documented.items():
            field = model.model_fields[key]
            assert field.is_required() == (required == "yes"), (name, key)
            if not field.is_required() and default and not default.startswith("every"):
                assert json.loads(default if default[0] in '"0123456789tfn' else f'"{default}"') == field.default


def _firmware(**hidden: bool) -> Firmware:
    return Firmware(open_sim("sim://crossbar?layers=4,3,2"), **hidden)


def _handle(fw: Firmware, kind: int, payload: bytes = b"", request_id: int = 1) -> Frame:
    return fw.handle(Frame(kind, request_id, payload))


def test_a_dense_layer_computes_gain_times_the_weight_rows_plus_the_bias():
    fw = _firmware()
    g = torch.Generator().manual_seed(0)
    params = [{p.name: torch.rand(p.shape, generator=g) * 2 - 1 for p in spec.params} for spec in fw.info.layers]
    x = torch.rand(5, 4, generator=g)
    for layer, spec in enumerate(fw.info.layers):
        for index, p in enumerate(spec.params):
            payload = SET_PARAMS_HEAD.pack(layer, index, 0, 0) + pack_values(params[layer][p.name])
            assert _handle(fw, MessageType.SET_PARAMS, payload).status == Status.OK
    assert _handle(fw, MessageType.SET_INPUT, SET_INPUT_HEAD.pack(0, 0, 0, 5, 0) + pack_values(x)).status == 0
    values = unpack_values(_handle(fw, MessageType.FORWARD).payload)
    spec = fw.info.layers[0]
    want = torch.relu(spec.gain * x @ params[0]["weight"].T + params[0]["bias"])  # weight is [outputs, inputs]
    assert torch.allclose(values[:5 * 3].reshape(5, 3), want, atol=1e-6)


def test_perturbed_blocks_are_every_seed_at_plus_eps_then_every_seed_at_minus_eps():
    fw = _firmware()
    spec = fw.info.layers[0]
    params = {p.name: torch.full(p.shape, 0.25) for p in spec.params}
    for index, p in enumerate(spec.params):
        _handle(fw, MessageType.SET_PARAMS, SET_PARAMS_HEAD.pack(0, index, 0, 0) + pack_values(params[p.name]))
    x = torch.eye(4)
    _handle(fw, MessageType.SET_INPUT, SET_INPUT_HEAD.pack(0, 0, 0, 4, 0) + pack_values(x))
    plus, minus = open_sim("sim://crossbar?layers=4,3,2").perturbed_pairs(0, params, x, Perturbation((5, 6), 0.1))
    for signs, blocks in ((3, [plus[0], plus[1], minus[0], minus[1]]), (2, [minus[0], minus[1]])):
        request = PerturbedForward(0, "rademacher", signs, 0.1, None, (5, 6)).pack()
        reply = unpack_values(_handle(fw, MessageType.PERTURBED_FORWARD, request, request_id=10 + signs).payload)
        assert torch.allclose(reply, torch.cat([b.flatten() for b in blocks]))


def test_bytes_after_a_requests_last_field_are_ignored():
    fw = _firmware()
    for kind in (MessageType.INFO, MessageType.STATUS, MessageType.ERROR, MessageType.RESET):
        assert _handle(fw, kind, b"future field", request_id=kind).status == Status.OK
    assert _handle(fw, MessageType.HELLO, HELLO_REQUEST.pack(1, 1) + b"more", request_id=20).status == Status.OK


def test_hello_empties_the_reply_cache():
    fw = _firmware()
    first = _handle(fw, MessageType.PING, b"a", request_id=30)
    assert _handle(fw, MessageType.PING, b"a", request_id=30) == first and fw.replies_resent == 1
    assert _handle(fw, MessageType.HELLO, HELLO_REQUEST.pack(1, 1), request_id=31).status == Status.OK
    _handle(fw, MessageType.PING, b"a", request_id=30)
    assert fw.replies_resent == 1  # executed again, not answered from the cache


def _f32(value: float) -> bytes:
    return struct.pack("<f", value)


def _perturbed(layer: int, distribution: int, signs: int, eps: float, chunk: int, seeds: tuple[int, ...],
               count: int | None = None) -> tuple[int, bytes]:
    fixed = PerturbedForward.FIXED.pack(layer, distribution, signs, 0, eps, chunk,
                                        len(seeds) if count is None else count, 0)
    return MessageType.PERTURBED_FORWARD, fixed + struct.pack(f"<{len(seeds)}I", *seeds)


NAN, FAR = float("nan"), 1 << 30
Requests = Callable[[DeviceInfo], list[tuple[int, bytes]]]


def _refusals() -> dict[tuple[str, str], tuple[dict[str, bool], Requests]]:
    """Each row of the refusal table: the device it needs (capabilities hidden), and requests built to fail
    that row's check and, where they can, every later one (so the status shows the order of the checks)."""
    set_params, set_input = MessageType.SET_PARAMS, MessageType.SET_INPUT
    return {
        ("any", "the type is none of section 4"): ({}, lambda info: [(0x42, b""), (0x81, b"")]),
        ("HELLO", "the payload is shorter than 2 bytes"): ({}, lambda info: [(MessageType.HELLO, b"\x01")]),
        ("HELLO", "1 is not within `min_version..max_version`"): (
            {}, lambda info: [(MessageType.HELLO, HELLO_REQUEST.pack(low, high)) for low, high in ((2, 3), (0, 0))]),
        ("SET_PARAMS", "the payload is shorter than 8 bytes, or its values are not whole `f32`"): (
            {}, lambda info: [(set_params, b"\x00" * 7), (set_params, SET_PARAMS_HEAD.pack(99, 9, 0, FAR) + b"abc")]),
        ("SET_PARAMS", "no such layer"): (
            {}, lambda info: [(set_params, SET_PARAMS_HEAD.pack(len(info.layers), 9, 0, FAR) + _f32(NAN))]),
        ("SET_PARAMS", "no such array"): (
            {}, lambda info: [(set_params, SET_PARAMS_HEAD.pack(0, len(info.layers[0].params), 0, FAR) + _f32(NAN))]),
        ("SET_PARAMS", "a value of a non-periodic array is outside `[low, high]` or NaN"): (
            {}, lambda info: [(set_params, SET_PARAMS_HEAD.pack(0, 0, 0, FAR) + _f32(value)) for value in (NAN, 5.0)]),
        ("SET_PARAMS", "`offset` plus the values run past the array"): (
            {}, lambda info: [(set_params, SET_PARAMS_HEAD.pack(0, 0, 0, info.layers[0].params[0].shape[0]
                                                                * info.layers[0].inputs) + _f32(0.0))]),
        ("SET_INPUT", "the payload is shorter than 12 bytes, or its values are not whole `f32`"): (
            {}, lambda info: [(set_input, b"\x00" * 11), (set_input, SET_INPUT_HEAD.pack(99, 0, 0, 0, FAR) + b"abc")]),
        ("SET_INPUT", "no such layer"): (
            {}, lambda info: [(set_input, SET_INPUT_HEAD.pack(len(info.layers), 0, 0, 0, FAR))]),
        ("SET_INPUT", "a layer above 0, on a device without capability bit 1"): (
            {"layer_input_injection": False}, lambda info: [(set_input, SET_INPUT_HEAD.pack(1, 0, 0, 0, FAR))]),
        ("SET_INPUT", "`batch` is 0 or above `max_batch`"): (
            {}, lambda info: [(set_input, SET_INPUT_HEAD.pack(0, 0, 0, n, FAR)) for n in (0, info.max_batch + 1)]),
        ("SET_INPUT", "`offset` plus the values run past `batch x inputs`"): (
            {}, lambda info: [(set_input, SET_INPUT_HEAD.pack(0, 0, 0, 1, info.layers[0].inputs) + _f32(0.0))]),
        ("FORWARD", "an array, or layer 0's input, is not completely written"): (
            {}, lambda info: [(MessageType.FORWARD, b"")]),
        ("PERTURBED_FORWARD", "the payload is shorter than 20 bytes, or not `20 + 4 * count`"): (
            {}, lambda info: [(MessageType.PERTURBED_FORWARD, b"\x00" * 19), _perturbed(99, 7, 0, NAN, FAR, (1,), 2)]),
        ("PERTURBED_FORWARD", "`distribution` is above 3"): ({}, lambda info: [_perturbed(99, 7, 0, NAN, FAR, (1,))]),
        ("PERTURBED_FORWARD", "`signs` is 0 or has bits above bit 1, or `count` is 0"): (
            {}, lambda info: [_perturbed(99, 0, 0, NAN, FAR, (1,)), _perturbed(99, 0, 7, NAN, FAR, (1,)),
                              _perturbed(99, 0, 3, NAN, FAR, ())]),
        ("PERTURBED_FORWARD", "no such layer"): ({}, lambda info: [_perturbed(len(info.layers), 0, 3, NAN, FAR, (1,))]),
        ("PERTURBED_FORWARD", "`chunk` is neither 0xFFFFFFFF nor below the layer's chunk count"): (
            {}, lambda info: [_perturbed(0, 0, 3, NAN, info.layers[0].n_chunks(), (1,))]),
        ("PERTURBED_FORWARD", "distribution 3 without capability bit 3, or for a layer without a `bias` array"): (
            {"bias_perturbation": False}, lambda info: [_perturbed(0, 3, 3, NAN, ALL_CHUNKS, (0,))]),
        ("PERTURBED_FORWARD", "`eps` is negative, NaN, or above the widest `high - low` of the layer's arrays"): (
            {}, lambda info: [_perturbed(0, 0, 3, eps, ALL_CHUNKS, (1,)) for eps in (NAN, -0.1, 2.5)]),
        ("PERTURBED_FORWARD", "the layer's arrays or its input are not completely written"): (
            {}, lambda info: [_perturbed(0, 0, 3, 0.1, ALL_CHUNKS, (1,))]),
    }


REFUSALS = _refusals()


def test_every_refusal_is_documented_in_the_order_the_emulator_checks():
    rows = doc_table("| message | refused when | status |")
    assert [(message, when) for message, when, _ in rows] == [(m, w.strip("`")) for m, w in REFUSALS]
    for (message, when, status), (hidden, requests) in zip(rows, REFUSALS.values()):
        fw = _firmware(**hidden)  # as it powers up: nothing written
        for request_id, (kind, payload) in enumerate(requests(fw.info), start=1):
            reply = _handle(fw, kind, payload, request_id)
            assert (reply.status, reply.payload) == (int(status), b""), (message, when, payload)
            assert fw.errors.take()[0] == int(status) and not fw.errors
