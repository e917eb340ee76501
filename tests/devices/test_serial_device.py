"""SerialDevice against the firmware emulator on a real pseudo-terminal (and a real socket)."""

import queue
import threading
from functools import partial

import pytest
import torch

from devices import DeviceConfigError, DeviceURLError, LinkError, open_device
from devices.messages import SET_PARAMS_HEAD, MessageType, pack_values
from devices.serial_device import SerialDevice
from hil.cli import main
from hil.config import build_config
from hil.estimator import estimate_activity
from hil.model import MonoForward
from hil.runs import RunFolder
from hil.trainer import Trainer
from simulators.emulator import Faults, Firmware
from simulators.registry import open_sim
from simulators.serve import serve_tcp
from tests.conftest import CNN_SIM, start_emulator, train_through

SIM = "sim://crossbar?preset=rram&layers=64,24,10&seed=5"


@pytest.mark.parametrize("estimator", ["activity", "weight"])
@pytest.mark.parametrize("sim", [SIM, CNN_SIM], ids=["mlp", "cnn"])
def test_training_through_the_pty_equals_training_in_process(tmp_path, sim, estimator):
    local, local_summary = train_through(tmp_path, "local", sim, estimator=estimator)
    server = start_emulator(sim)
    try:
        remote, remote_summary = train_through(tmp_path, "remote", f"serial://{server.port}", estimator=estimator)
    finally:
        server.stop()
    for a, b in zip(local.model.tensors(), remote.model.tensors()):
        assert torch.equal(a, b)
    assert remote_summary["test_accuracy"] == local_summary["test_accuracy"] > 0.5
    assert remote_summary["device_queries"] == local_summary["device_queries"]
    assert remote.rule.estimators == [estimator] * len(remote.rule.estimators)


def test_a_firmware_without_bias_perturbations_trains_through_the_fallback(tmp_path, caplog):
    """Bias arrays written at base +- eps, each measured at eps 0: the same numbers, a little more traffic."""
    ideal = "sim://crossbar?layers=64,24,10"
    local, local_summary = train_through(tmp_path, "local", ideal)
    server = start_emulator(ideal, bias_perturbation=False)
    try:
        with caplog.at_level("WARNING", logger="devices.bench"):
            remote, remote_summary = train_through(tmp_path, "remote", f"serial://{server.port}")
    finally:
        server.stop()
    assert not remote.info.capabilities.bias_perturbation
    assert "has no bias perturbations" in caplog.text and "bias written" in remote.rule.summary()
    for a, b in zip(local.model.tensors(), remote.model.tensors()):
        assert torch.equal(a, b)
    assert remote_summary["device_queries"] == local_summary["device_queries"]


def test_the_fallback_sends_no_bias_outside_its_bounds(tmp_path):
    """A bias at its bound moves only inward: what the host writes stays in bounds, and the estimate
    matches the in-process device's, which clips the same way."""
    ideal = "sim://crossbar?layers=64,24,10"
    server = start_emulator(ideal, bias_perturbation=False)
    try:
        remote = open_device(f"serial://{server.port}")
        local = open_sim(ideal)
        model = MonoForward.initialise(local.info(), 10, 0)
        with torch.no_grad():
            model.params[0]["bias"][:2] = torch.tensor([1.0, -1.0])
        x, y = torch.rand(16, 64, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 10
        estimates = []
        for device in (local, remote):
            acts = device.forward(model.device_params(), x)
            with torch.no_grad():
                estimates.append(estimate_activity(device, 0, device.info().layers[0], model.device_params()[0], x,
                                                   acts[0], model.objective(0), y, 0.05, partial(model.features, 0)))
        assert remote.errors() == []  # the firmware refused nothing: every value it got was in bounds
        remote.close()
    finally:
        server.stop()
    for name in ("weight", "bias"):
        assert torch.equal(estimates[0][name], estimates[1][name])


def test_a_bad_link_and_an_unplug_lose_nothing(tmp_path):
    ideal = "sim://crossbar?layers=64,24,10"
    clean, _ = train_through(tmp_path, "clean", ideal)
    # rates high enough that every kind of fault happens whatever the timing-dependent resends do
    server = start_emulator(ideal, Faults(corrupt=0.03, drop=0.02, disconnect_after=150, seed=1))
    try:
        url = f"serial://{server.port}?timeout=0.3"
        config = build_config({"device": url, "epochs": 2, "batch_size": 64, "directions": 2,
                               "run_dir": tmp_path / "faulty", "seed": 3})
        faulty = Trainer(config, RunFolder.create(config), progress=False)
        faulty.fit()
        stats = faulty.device.counters.as_dict()
        faulty.device.close()
    finally:
        server.stop()
    for a, b in zip(clean.model.tensors(), faulty.model.tensors()):
        assert torch.equal(a, b)
    injected = server.injected
    assert injected["corrupted_replies"] > 0 and injected["dropped_replies"] + injected["dropped_requests"] > 0
    assert stats["link_reconnects"] >= 1  # the unplug (a starved CI machine may add one)
    assert stats["link_crc_errors"] >= 1 and stats["link_resends"] >= 1
    assert server.firmware.replies_resent > 0  # retries answered from the cache, not applied again


def test_lost_frames_are_proven_lost_by_probes_and_resent_long_before_the_timeout():
    """With a 30 s timeout, 150 measurements over a link losing about one exchange in five finish without
    one timeout: a PING sent behind a missing reply comes back first, which proves the loss at once."""
    faults = Faults(seed=3)
    server = start_emulator(faults=faults)
    try:
        with SerialDevice(f"serial://{server.port}?timeout=30") as dev:
            g = torch.Generator().manual_seed(0)
            params = [{p.name: torch.rand(p.shape, generator=g) - 0.5 for p in spec.params}
                      for spec in dev.info().layers]
            x = torch.rand(4, 16, generator=g)
            clean = dev.forward(params, x)
            faults.corrupt = faults.drop = 0.05  # from here on, after the handshake (HELLO cannot be probed)
            for _ in range(150):
                assert all(torch.equal(a, b) for a, b in zip(dev.forward(params, x), clean))
    finally:
        server.stop()
    assert sum(server.injected.values()) > 10
    assert dev.stats.timeouts == 0 and dev.stats.probes > 0 and dev.stats.resends > 0


@pytest.mark.parametrize("dialect", ["binary", "scpi"])
def test_a_device_without_layer_input_injection_is_refused_once_at_connect(tmp_path, capsys, dialect):
    """Training needs bit 1 for every layer above 0: refused before any work, in one line naming the bit."""
    server = start_emulator("sim://crossbar?layers=64,24,10", dialect=dialect, layer_input_injection=False)
    url = f"serial://{server.port}" if dialect == "binary" else f"visa://ASRL{server.port}::INSTR"
    try:
        code = main(["train", "--device", url, "--epochs", "1", "--no-progress", "--run-dir", str(tmp_path / "run")])
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hil: error: ") and len(err.strip().splitlines()) == 1
    assert "lacks capability bit 1 (layer input injection" in err and "update its firmware" in err
    assert server.firmware.device.counters.queries == 0  # refused at connect, before any measurement


def test_a_one_layer_device_needs_no_layer_input_injection():
    server = start_emulator("sim://crossbar?layers=64,10", layer_input_injection=False)
    try:
        with open_device(f"serial://{server.port}") as dev:
            assert not dev.info().capabilities.layer_input_injection
    finally:
        server.stop()


def test_the_device_refuses_out_of_bounds_writes_with_its_own_error_text():
    server = start_emulator()
    try:
        with SerialDevice(f"serial://{server.port}") as dev:
            bad = SET_PARAMS_HEAD.pack(0, 0, 0, 0) + pack_values(torch.tensor([0.5, 3.0]))
            with pytest.raises(DeviceConfigError, match=r"OUT_OF_BOUNDS.*outside \[-1.0, 1.0\]"):
                dev.transact([(MessageType.SET_PARAMS, bad)])
            assert dev.errors() == []  # the refusal drained the queue into the message
            with pytest.raises(DeviceConfigError, match="BAD_LAYER"):
                dev.transact([(MessageType.SET_PARAMS, SET_PARAMS_HEAD.pack(9, 0, 0, 0))])
    finally:
        server.stop()


def test_pipelining_off_gives_the_same_measurements():
    server = start_emulator()
    try:
        g = torch.Generator().manual_seed(0)
        with SerialDevice(f"serial://{server.port}") as a, SerialDevice(f"serial://{server.port}?pipeline=0") as b:
            params = [{k: torch.rand(p.shape, generator=g) * 2 - 1 for k, p in ((p.name, p) for p in s.params)}
                      for s in a.info().layers]
            x = torch.rand(300, 16, generator=g)
            assert all(torch.equal(u, v) for u, v in zip(a.forward(params, x), b.forward(params, x)))
    finally:
        server.stop()


def test_socket_urls_reach_the_emulator_over_tcp():
    ports: queue.Queue[int] = queue.Queue()
    firmware = Firmware(open_sim("sim://crossbar?layers=16,12,10"))
    threading.Thread(target=serve_tcp, args=(firmware, 0), kwargs={"ready": ports.put}, daemon=True).start()
    with open_device(f"socket://127.0.0.1:{ports.get(timeout=10)}") as dev:
        assert dev.info().identity.startswith("hil simulated crossbar 16x12x10")
        assert dev.ping() < 1.0


@pytest.mark.parametrize("url, message", [
    ("serial:///dev/does-not-exist", "cannot open /dev/does-not-exist"),
    ("serial://", "names no port"),
    ("serial://zz:01", "VID:PID in hex"),
    ("serial://1209:0001", "no serial port with USB ID 1209:0001"),
    ("serial:///dev/null?baud=-3", "option 'baud'"),
    ("serial:///dev/null?speed=3", "options: baud, timeout"),
    ("loop://", "echoes our own requests back"),
])
def test_bad_urls_say_what_is_wrong(url, message):
    with pytest.raises((DeviceURLError, LinkError), match=message):
        SerialDevice(url)
