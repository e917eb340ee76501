"""``--hil-device URL`` runs the device-contract tests against real hardware; without it they use
the firmware emulator on a pseudo-terminal, through the same SerialDevice code path."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.config import build_config
from hil.runs import RunFolder
from hil.trainer import Trainer
from simulators.emulator import Faults, Firmware
from simulators.qemu import QEMU, QemuFirmware, build_firmware
from simulators.registry import open_sim
from simulators.serve import Dialect, PtyServer

CONTRACT_SIM = "sim://crossbar?layers=16,12,10"
CNN_SIM = "sim://crossbar?preset=rram&layers=64,10&conv=4c3p2&seed=5"  # a conv layer over the links


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hil-device", metavar="URL", default=None,
                     help="run the device-contract tests against this bench device, e.g. serial:///dev/ttyACM0")


def train_through(tmp_path: Path, name: str, device_url: str, epochs: int = 2,
                  estimator: str = "auto") -> tuple[Trainer, dict]:
    """Train the small digits job used to compare a link with the in-process simulator."""
    config = build_config({"device": device_url, "epochs": epochs, "batch_size": 64, "directions": 2,
                           "run_dir": tmp_path / name, "seed": 3, "estimator": estimator})
    with Trainer(config, RunFolder.create(config), progress=False) as trainer:
        summary = trainer.fit()
    return trainer, summary


def start_emulator(sim_url: str = CONTRACT_SIM, faults: Faults | None = None, dialect: Dialect = "binary",
                   bias_perturbation: bool = True, layer_input_injection: bool = True) -> PtyServer:
    """A firmware emulator serving ``sim_url`` on a fresh pty (stop it when done); False hides a capability."""
    firmware = Firmware(open_sim(sim_url), bias_perturbation, layer_input_injection)
    return PtyServer(firmware, faults, dialect=dialect).start()


FIRMWARE_TOOLS = ("make", "arm-none-eabi-gcc", QEMU)


def _firmware_tools() -> None:
    """Skip without the firmware toolchain, except where HIL_REQUIRE_FIRMWARE is set (CI installs
    the toolchain and sets it, so there the tests fail instead)."""
    missing = [tool for tool in FIRMWARE_TOOLS if shutil.which(tool) is None]
    if missing:
        message = (f"{', '.join(missing)} not found: apt-get install make gcc-arm-none-eabi "
                   "libnewlib-arm-none-eabi qemu-system-arm")
        if os.environ.get("HIL_REQUIRE_FIRMWARE"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def firmware_image() -> Path:
    """The reference firmware built for QEMU (once per session)."""
    _firmware_tools()
    return build_firmware()


@pytest.fixture(scope="session")
def conv_firmware_image() -> Path:
    """The reference firmware built for QEMU with its conv network (``firmware/nets/conv_digits.h``)."""
    _firmware_tools()
    return build_firmware("conv_digits")


@pytest.fixture
def qemu_firmware(firmware_image: Path) -> Iterator[QemuFirmware]:
    """The reference firmware booted on QEMU, its UART on a pty."""
    with QemuFirmware(firmware_image) as qemu:
        yield qemu


LOSSY = Faults(corrupt=0.03, drop=0.03, seed=5)  # per frame, each direction: the contract holds on a bad link


@pytest.fixture(params=["serial", "serial-lossy", "visa", "firmware"])
def contract_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The bench device under test: ``--hil-device``, or else an emulator on a pty in each dialect (the
    binary one also behind a link that corrupts and drops frames) and the reference C firmware on QEMU."""
    given = request.config.getoption("--hil-device")
    if given:
        if request.param == "serial-lossy":
            pytest.skip("faults are injected by the emulator only")
        if not given.startswith(request.param):
            pytest.skip(f"--hil-device {given} is not a {request.param} URL")
        yield given
        return
    if request.param == "firmware":
        yield f"serial://{request.getfixturevalue('qemu_firmware').port}"
        return
    lossy = LOSSY.model_copy() if request.param == "serial-lossy" else None
    server = start_emulator(faults=lossy, dialect="scpi" if request.param == "visa" else "binary")
    try:
        yield f"visa://ASRL{server.port}::INSTR" if request.param == "visa" else f"serial://{server.port}?timeout=0.5"
    finally:
        server.stop()
