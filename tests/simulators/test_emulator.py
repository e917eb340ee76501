import os
import time

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.codec import Frame, FrameDecoder, encode_frame
from devices.messages import (
    HELLO_REQUEST,
    SET_INPUT_HEAD,
    SET_PARAMS_HEAD,
    MessageType,
    PerturbedForward,
    Status,
    pack_values,
    unpack_error,
)
from simulators.emulator import ERROR_QUEUE, Faults, FaultyLink, Firmware
from simulators.registry import open_sim
from simulators.serve import PtyServer


def _firmware() -> Firmware:
    return Firmware(open_sim("sim://crossbar?layers=4,3,2"))


def _request(fw: Firmware, kind: MessageType, payload: bytes = b"", request_id: int = 1) -> Frame:
    return fw.handle(Frame(int(kind), request_id, payload))


def _load(fw: Firmware, batch: int = 2) -> None:
    for layer, spec in enumerate(fw.info.layers):
        for index, p in enumerate(spec.params):
            values = pack_values(torch.full(p.shape, 0.5))
            assert _request(fw, MessageType.SET_PARAMS, SET_PARAMS_HEAD.pack(layer, index, 0, 0) + values).status == 0
    x = pack_values(torch.ones(batch, 4))
    assert _request(fw, MessageType.SET_INPUT, SET_INPUT_HEAD.pack(0, 0, 0, batch, 0) + x).status == 0


@given(st.integers(0, 255), st.binary(max_size=64))
@settings(max_examples=400)
def test_any_request_gets_a_reply_with_a_status_and_never_crashes_the_firmware(kind, payload):
    fw = _firmware()
    reply = fw.handle(Frame(kind, 7, payload))
    assert reply.request_id == 7 and reply.type == kind | 0x80
    assert reply.status in {s.value for s in Status}
    assert (reply.status != 0) == (len(fw.errors) > 0)


def test_forward_needs_everything_written_first():
    fw = _firmware()
    assert _request(fw, MessageType.FORWARD).status == Status.NOT_READY
    _load(fw)
    reply = _request(fw, MessageType.FORWARD, request_id=2)
    assert reply.status == Status.OK and len(reply.payload) == 4 * 2 * (3 + 2)


def test_a_refused_set_input_keeps_the_input_it_had():
    """Every check runs before the buffer is resized: a refusal at a new batch changes nothing."""
    fw = _firmware()
    _load(fw, batch=2)
    for request_id, refused in enumerate([SET_INPUT_HEAD.pack(0, 0, 0, 3, 3 * 4) + pack_values(torch.ones(1)),
                                          SET_INPUT_HEAD.pack(0, 0, 0, 3, 0) + b"abc"], start=5):
        assert _request(fw, MessageType.SET_INPUT, refused, request_id).status in (Status.OUT_OF_RANGE,
                                                                                 Status.BAD_LENGTH)
    reply = _request(fw, MessageType.FORWARD, request_id=9)
    assert reply.status == Status.OK and len(reply.payload) == 4 * 2 * (3 + 2)  # still the batch of 2


def test_a_repeated_request_is_answered_from_the_cache_and_not_executed_again():
    fw = _firmware()
    _load(fw)
    request = PerturbedForward(0, "rademacher", 3, 0.1, None, (5, 6)).pack()
    first = _request(fw, MessageType.PERTURBED_FORWARD, request, request_id=40)
    queries = fw.device.counters.queries
    again = _request(fw, MessageType.PERTURBED_FORWARD, request, request_id=40)
    assert again == first and fw.replies_resent == 1 and fw.device.counters.queries == queries
    other = _request(fw, MessageType.PERTURBED_FORWARD, request, request_id=41)
    assert other.payload == first.payload and fw.device.counters.queries == queries + 4


def test_refusals_queue_errors_scpi_style_with_overflow():
    fw = _firmware()
    for i in range(ERROR_QUEUE + 3):
        assert _request(fw, MessageType.SET_PARAMS, SET_PARAMS_HEAD.pack(7, 0, 0, 0), request_id=100 + i).status == 3
    codes = [unpack_error(_request(fw, MessageType.ERROR, request_id=200 + i).payload) for i in range(ERROR_QUEUE + 1)]
    assert codes[0][0] == Status.BAD_LAYER and "no layer 7" in codes[0][1]
    assert codes[ERROR_QUEUE - 1] == (-350, "Queue overflow") and codes[ERROR_QUEUE] == (0, "No error")


def test_batch_limit_and_version_negotiation():
    fw = _firmware()
    too_big = SET_INPUT_HEAD.pack(0, 0, 0, fw.info.max_batch + 1, 0)
    assert _request(fw, MessageType.SET_INPUT, too_big).status == Status.BATCH_TOO_LARGE
    assert _request(fw, MessageType.HELLO, HELLO_REQUEST.pack(2, 3), request_id=2).status == Status.VERSION
    assert _request(fw, MessageType.HELLO, HELLO_REQUEST.pack(1, 3), request_id=3).status == Status.OK


def test_an_emulated_unplug_moves_the_symlink_to_a_new_pty(tmp_path):
    server = PtyServer(_firmware(), Faults(disconnect_after=1), link=tmp_path / "ttyHIL").start()
    try:
        before = os.readlink(server.port)
        fd = os.open(server.port, os.O_RDWR | os.O_NOCTTY)
        os.write(fd, encode_frame(Frame(int(MessageType.HELLO), 1, HELLO_REQUEST.pack(1, 1))))
        deadline = time.monotonic() + 5
        while os.readlink(server.port) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.readlink(server.port) != before
        os.close(fd)
    finally:
        server.stop()
    assert not (tmp_path / "ttyHIL").exists()


def test_corrupt_flips_a_bit_in_that_share_of_frames_in_each_direction_however_they_are_chunked():
    """1 KB requests arriving in 64-byte pieces: the rate applies per frame, not per piece."""
    fw = _firmware()
    link = FaultyLink(fw, Faults(corrupt=0.05, seed=11))
    decoder, replies = FrameDecoder(), []
    sent = 4000
    for i in range(sent):
        wire = encode_frame(Frame(int(MessageType.PING), i, bytes(range(1, 256)) * 4))
        for start in range(0, len(wire), 64):
            link.receive(wire[start:start + 64], lambda data: replies.extend(decoder.feed(data)))
    answered = fw.frames_received
    assert link.injected["corrupted_requests"] == sent - answered  # every corrupted request was rejected
    assert link.injected["corrupted_replies"] == answered - len(replies)
    assert abs((sent - answered) / sent - 0.05) < 0.015
    assert abs((answered - len(replies)) / answered - 0.05) < 0.015
