"""VisaDevice: the driver against a pyvisa-sim YAML instrument, and pyvisa-py against the
firmware emulator's SCPI dialect over a real socket."""

import queue
import threading
from pathlib import Path

import pytest
import torch

from devices import DeviceConfigError, DeviceURLError, LinkError, open_device
from devices.visa_device import ScpiErrors, VisaDevice
from simulators.emulator import Faults, Firmware
from simulators.registry import open_sim
from simulators.serve import serve_tcp
from tests.conftest import CNN_SIM, train_through

YAML = Path(__file__).with_name("hil_instrument.yaml")
SIM = "sim://crossbar?preset=rram&layers=64,24,10&seed=5"


def _yaml_url(host: str) -> str:
    return f"visa://TCPIP0::{host}::inst0::INSTR?backend={YAML}@sim&timeout=0.5"


def _serve(sim_url: str, faults: Faults | None = None) -> tuple[int, Firmware]:
    """The emulator speaking SCPI on a free local port."""
    ports: queue.Queue[int] = queue.Queue()
    firmware = Firmware(open_sim(sim_url))
    threading.Thread(target=serve_tcp, args=(firmware, 0, faults), daemon=True,
                     kwargs={"dialect": "scpi", "ready": ports.put}).start()
    return ports.get(timeout=10), firmware


def test_the_driver_reads_identity_topology_and_an_empty_error_queue_from_a_yaml_instrument():
    with VisaDevice(_yaml_url("hil.local")) as dev:
        assert dev.identity == "hil,yaml chip,0,fw 1"
        assert dev.info().layers[0].params[0].shape == (2, 4) and dev.info().max_batch == 16
        assert dev.errors() == []


@pytest.mark.parametrize("host, message", [
    ("dmm.local", "not a hil device"),
    ("future.local", "speaks protocol '2', this host speaks 1"),
])
def test_the_driver_refuses_other_instruments(host, message):
    with pytest.raises(LinkError, match=message):
        VisaDevice(_yaml_url(host))


@pytest.mark.parametrize("estimator", ["activity", "weight"])
@pytest.mark.parametrize("sim", [SIM, CNN_SIM], ids=["mlp", "cnn"])
def test_training_over_visa_equals_training_in_process(tmp_path, sim, estimator):
    local, local_summary = train_through(tmp_path, "local", sim, estimator=estimator)
    port, _ = _serve(sim)
    remote, remote_summary = train_through(tmp_path, "visa", f"visa://TCPIP0::127.0.0.1::{port}::SOCKET",
                                           estimator=estimator)
    assert remote.info.capabilities.bias_perturbation  # read from the INFO block: SCPI has no HELLO
    for a, b in zip(local.model.tensors(), remote.model.tensors()):
        assert torch.equal(a, b)
    assert remote_summary["test_accuracy"] == local_summary["test_accuracy"] > 0.5


def test_bad_commands_queue_scpi_errors_raise_typed_errors_and_corrupt_nothing():
    port, _ = _serve("sim://crossbar?layers=16,12,10")
    reference = open_sim("sim://crossbar?layers=16,12,10")
    g = torch.Generator().manual_seed(0)
    params = [{p.name: torch.rand(p.shape, generator=g) * 2 - 1 for p in s.params} for s in reference.info().layers]
    x = torch.rand(8, 16, generator=g)
    with VisaDevice(f"visa://TCPIP0::127.0.0.1::{port}::SOCKET") as dev:
        dev.forward(params, x)
        raw = dev.resource
        raw.write("NETW:FROB 1")
        with pytest.raises(ScpiErrors, match="-113 Undefined header"):
            dev.check_errors()
        raw.write_binary_values("NETW:PAR 0,0,0,", b"\x00\x00\x80\x40", datatype="B")  # 4.0, outside [-1, 1]
        with pytest.raises(DeviceConfigError, match=r"-222 Data out of range.*outside \[-1.0, 1.0\]"):
            dev.check_errors()
        raw.write_raw(b"NETW:PAR 0,0,0,#12abcd\n")  # says 2 bytes, sends 4
        with pytest.raises(ScpiErrors, match="-161 Invalid block data; block length does not match"):
            dev.check_errors()
        raw.write_raw(b"NETW:PAR 0,0,0,#13abc\n")  # 3 bytes are not whole f32 values
        with pytest.raises(ScpiErrors, match="-161 Invalid block data; 3 bytes"):
            dev.check_errors()
        raw.write_binary_values("NETW:INP 0,5,0,", b"\x00" * 12, datatype="B")  # 3 values of a new 5 x 16 input
        assert dev.errors() == []  # a partial write is allowed ...
        with pytest.raises(DeviceConfigError, match="-221 Settings conflict"):
            dev._query_block("MEAS:FORW?")  # ... but measuring before the input is complete is not
        dev._forget()  # the host no longer knows what the device holds
        assert all(torch.equal(a, b) for a, b in zip(dev.forward(params, x), reference.forward(params, x)))


def test_a_dropped_connection_is_reopened_and_the_state_restored():
    port, firmware = _serve("sim://crossbar?layers=16,12,10", Faults(disconnect_after=12))
    reference = open_sim("sim://crossbar?layers=16,12,10")
    g = torch.Generator().manual_seed(1)
    params = [{p.name: torch.rand(p.shape, generator=g) * 2 - 1 for p in s.params} for s in reference.info().layers]
    with VisaDevice(f"visa://TCPIP0::127.0.0.1::{port}::SOCKET?timeout=1") as dev:
        for _ in range(6):
            x = torch.rand(4, 16, generator=g)
            assert all(torch.equal(a, b) for a, b in zip(dev.forward(params, x), reference.forward(params, x)))
        assert dev.stats.reconnects == 1


def test_visa_urls_are_checked():
    with pytest.raises(DeviceURLError, match="names no VISA resource"):
        open_device("visa://")
    with pytest.raises(DeviceURLError, match="option 'speed'"):
        open_device("visa://TCPIP0::127.0.0.1::1::SOCKET?speed=2")
    with pytest.raises(LinkError, match="cannot open VISA resource"):
        open_device("visa://TCPIP0::127.0.0.1::1::SOCKET?timeout=0.5")
