import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.codec import CodecError, Frame, FrameDecoder, decode_frame, encode_frame

frames = st.builds(Frame, type=st.integers(0, 255), request_id=st.integers(0, 0xFFFF),
                   payload=st.binary(max_size=600), status=st.integers(0, 0xFFFF), flags=st.integers(0, 0xFFFF))


def test_crc_is_the_zlib_crc32_with_the_documented_check_value():
    assert zlib.crc32(b"123456789") == 0xCBF43926


@given(st.lists(frames, max_size=5))
def test_frames_survive_any_split_of_the_stream(sent):
    wire = b"".join(encode_frame(f) for f in sent)
    decoder = FrameDecoder()
    got = []
    for start in range(0, len(wire), 7):
        got += decoder.feed(wire[start:start + 7])
    assert got == sent and decoder.rejected == 0


@given(st.binary(max_size=2000))
@settings(max_examples=500)
def test_random_bytes_never_raise_and_never_yield_a_frame_that_was_not_sent(data):
    decoder = FrameDecoder(max_frame=512)
    for frame in decoder.feed(data):
        assert encode_frame(frame)[:-1] in data  # only an intact encoding inside the noise decodes
    try:
        decode_frame(data)
    except CodecError:
        pass


@given(frames, st.data())
@settings(max_examples=500)
def test_bit_flips_are_always_rejected(frame, data):
    wire = bytearray(encode_frame(frame))
    flips = data.draw(st.lists(st.integers(0, 8 * len(wire) - 1), min_size=1, max_size=3, unique=True))
    for bit in flips:
        wire[bit // 8] ^= 1 << (bit % 8)
    decoder = FrameDecoder()
    got = decoder.feed(bytes(wire) + b"\x00")
    assert all(f == frame for f in got)
    assert got == [] or len(flips) > 1  # one flipped bit is always caught by the CRC


@given(frames, st.integers(min_value=1))
def test_truncated_frames_are_rejected_and_the_next_one_decodes(frame, cut):
    wire = encode_frame(frame)
    cut = cut % (len(wire) - 1) or 1
    decoder = FrameDecoder()
    assert decoder.feed(wire[:cut] + b"\x00" + wire) == [frame]
    assert decoder.rejected == 1


def test_an_overlong_run_without_delimiter_is_dropped_up_to_the_next_one():
    decoder = FrameDecoder(max_frame=100)
    frame = Frame(0x81, 3, b"ok")
    assert decoder.feed(b"\x01" * 150) == []
    assert decoder.feed(b"\x01" * 50 + b"\x00" + encode_frame(frame)) == [frame]
    assert decoder.rejected == 1


def test_the_buffer_stays_bounded_and_an_overlong_run_counts_as_rejected_at_once():
    """A sender that never sends a delimiter cannot grow the buffer past ``max_frame``."""
    decoder = FrameDecoder(max_frame=100)
    for _ in range(1000):
        assert decoder.feed(b"\x01" * 1000) == []
        assert decoder.pending <= 100
    assert decoder.rejected == 1  # counted when it passed the bound, not only at a delimiter
    overlong = Frame(0x81, 1, bytes(200))
    assert decoder.feed(b"\x00" + encode_frame(overlong)) == []  # refused even when it arrives whole
    assert decoder.rejected == 2 and decoder.pending == 0
