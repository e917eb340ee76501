"""``--hil-device URL`` runs the device-contract tests against real hardware; without it they use
the firmware emulator on a pseudo-terminal, through the same SerialDevice code path."""

from collections.abc import Iterator

import pytest

from simulators.emulator import Faults, Firmware, PtyServer
from simulators.registry import open_sim

CONTRACT_SIM = "sim://crossbar?layers=16,12,10"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hil-device", metavar="URL", default=None,
                     help="run the device-contract tests against this bench device, e.g. serial:///dev/ttyACM0")


def start_emulator(sim_url: str = CONTRACT_SIM, faults: Faults | None = None) -> PtyServer:
    """A firmware emulator serving ``sim_url`` on a fresh pty (stop it when done)."""
    return PtyServer(Firmware(open_sim(sim_url)), faults).start()


@pytest.fixture
def contract_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The bench device under test: ``--hil-device``, or an emulator on a pty."""
    given = request.config.getoption("--hil-device")
    if given:
        yield given
        return
    server = start_emulator()
    try:
        yield f"serial://{server.port}?timeout=0.5"
    finally:
        server.stop()
