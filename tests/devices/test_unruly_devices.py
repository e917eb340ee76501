"""Devices that never answer properly, on a real pseudo-terminal: the host gives up within a bounded
time with a LinkError (``hil: error: ...`` from the CLI), and its receive buffer stays bounded."""

import os
import random
import select
import threading
import time
import tty

import pytest

from devices import LinkError
from devices.codec import FrameDecoder, encode_frame
from devices.messages import MessageType
from devices.serial_device import SMALL_REPLY, SerialDevice
from hil.cli import main
from simulators.emulator import Firmware
from simulators.registry import open_sim

# tight link options keep each case to a few seconds; the bound asserted is far above that
FAST = "timeout=0.5&retries=2&reconnects=1"
BOUND_SECONDS = 60


class UnrulyDevice:
    """A fake device on the master side of a pty: it answers the handshake (HELLO and INFO, through the
    emulator's firmware) when asked to, then babbles garbage without a delimiter, babbles delimited
    garbage, or stays silent, until stopped."""

    def __init__(self, behaviour: str, handshake: bool) -> None:
        self.behaviour = behaviour
        self.babbling = not handshake
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self.firmware = Firmware(open_sim("sim://crossbar?layers=4,3"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "UnrulyDevice":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)
        os.close(self._slave)

    def _garbage(self, rng: random.Random) -> bytes:
        if self.behaviour == "garbage":
            return bytes(rng.randrange(1, 256) for _ in range(1024))
        return b"".join(bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 200))) + b"\x00"
                        for _ in range(10))

    def _run(self) -> None:
        decoder, rng = FrameDecoder(), random.Random(0)
        while not self._stop.is_set():
            talking = self.babbling and self.behaviour != "silent"
            readable, writable, _ = select.select([self.master], [self.master] if talking else [], [], 0.01)
            try:
                if readable:
                    for frame in decoder.feed(os.read(self.master, 1 << 16)):
                        if not self.babbling:
                            os.write(self.master, encode_frame(self.firmware.handle(frame)))
                            self.babbling = frame.type == MessageType.INFO
                if writable:
                    os.write(self.master, self._garbage(rng))
                    time.sleep(0.002)
            except (BlockingIOError, OSError):
                time.sleep(0.002)


def _within_bound(call) -> BaseException | None:
    """Run ``call`` on a thread and return what it raised (fails if it has not returned within the bound)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(BOUND_SECONDS)
    assert outcome, f"the host was still waiting on the device after {BOUND_SECONDS} s"
    return outcome[0]


BEHAVIOURS = ["garbage", "delimited garbage", "silent"]


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_a_device_that_never_answers_the_handshake_is_refused_with_a_link_error(behaviour):
    with UnrulyDevice(behaviour, handshake=False) as device:
        error = _within_bound(lambda: SerialDevice(f"serial://{device.path}?{FAST}"))
    assert isinstance(error, LinkError), repr(error)
    assert "no device answered the handshake" in str(error) and "no intact reply to HELLO" in str(error)
    assert ("nothing arrived" in str(error)) == (behaviour == "silent")


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_a_device_that_stops_answering_ends_in_a_link_error_with_a_bounded_buffer(behaviour):
    with UnrulyDevice(behaviour, handshake=True) as device:
        dev = SerialDevice(f"serial://{device.path}?{FAST}")
        error = _within_bound(dev.ping)
        dev.close()
    assert isinstance(error, LinkError) and "could not reopen it" in str(error), repr(error)
    assert dev.stats.reconnects == 1
    # the buffer never holds more than the largest reply the request could get (a PING, then a HELLO)
    assert dev._decoder.pending <= dev._decoder.max_frame < 2 * SMALL_REPLY
    if behaviour != "silent":
        assert dev.stats.crc_errors > 0  # every run of garbage was rejected, overlong ones included


def test_the_cli_reports_a_silent_device_in_one_line(tmp_path, capsys):
    with UnrulyDevice("silent", handshake=False) as device:
        code = main(["train", "--device", f"serial://{device.path}?{FAST}", "--epochs", "1", "--no-progress",
                     "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hil: error: serial://") and "Traceback" not in err
    assert "no device answered the handshake" in err and len(err.strip().splitlines()) == 1
