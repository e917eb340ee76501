import pytest

from devices import DeviceURLError, open_device, register, schemes
from devices.registry import url_options
from simulators import SimulatedCrossbar


def test_sim_scheme_is_found_through_its_entry_point():
    device = open_device("sim://crossbar?layers=8,4,3&activation=tanh")
    assert isinstance(device, SimulatedCrossbar)
    assert [layer.outputs for layer in device.info().layers] == [4, 3]
    assert device.info().layers[0].activation == "tanh"


def test_unknown_scheme_lists_the_known_ones():
    with pytest.raises(DeviceURLError, match="sim"):
        open_device("nope://x")


def test_url_without_scheme_is_refused():
    with pytest.raises(DeviceURLError, match="no scheme"):
        open_device("crossbar")


def test_registered_opener_is_used():
    register("testdev", lambda url: SimulatedCrossbar())
    assert "testdev" in schemes()
    assert isinstance(open_device("testdev://anything"), SimulatedCrossbar)


def test_repeated_option_is_an_error():
    with pytest.raises(DeviceURLError, match="twice"):
        url_options("sim://crossbar?layers=1,2&layers=3,4")
