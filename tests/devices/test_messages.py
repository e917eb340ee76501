import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.messages import (
    DeviceStatus,
    Hello,
    PerturbedForward,
    ProtocolError,
    pack_error,
    pack_values,
    unpack_error,
    unpack_values,
)


def test_layouts_round_trip():
    hello = Hello(1, 8, 65536, 7, 1000, "chip s/n 42", "fw 1.2")
    assert Hello.unpack(hello.pack()) == hello
    request = PerturbedForward(2, "gaussian", 3, 0.0125, None, (1, 2, 0xFFFFFFFF))
    assert PerturbedForward.unpack(request.pack()) == request and request.queries == 6
    status = DeviceStatus(1, 2, 3, 4.5, 6, 7, 8)
    assert DeviceStatus.unpack(status.pack()) == status
    assert unpack_error(pack_error(-350, "Queue overflow")) == (-350, "Queue overflow")
    values = torch.randn(3, 5)
    assert torch.equal(unpack_values(pack_values(values)).reshape(3, 5), values)


def test_wrong_sizes_name_the_problem():
    with pytest.raises(ProtocolError, match="expected 4 values, got 3"):
        unpack_values(bytes(12), 4)
    with pytest.raises(ProtocolError, match="names 2 seeds"):
        PerturbedForward.unpack(PerturbedForward(0, "rademacher", 1, 0.1, None, (1, 2)).pack()[:-4])
    with pytest.raises(ProtocolError, match="runs past"):
        Hello.unpack(Hello(1, 8, 65536, 0, 1, "id", "fw").pack()[:-3])
    with pytest.raises(ProtocolError, match="at least 1 and 64"):
        Hello.unpack(Hello(1, 0, 65536, 0, 1, "", "").pack())


@given(st.binary(max_size=80))
@settings(max_examples=300)
def test_unpackers_raise_only_protocol_errors(data):
    for unpack in (Hello.unpack, PerturbedForward.unpack, DeviceStatus.unpack, unpack_error, unpack_values):
        try:
            unpack(data)
        except ProtocolError:
            pass
