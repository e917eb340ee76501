"""Put an emulated device on a real pseudo-terminal or TCP socket, in either dialect.

A *link* turns received bytes into replies: :class:`~simulators.emulator.FaultyLink` for the
binary protocol, :class:`~simulators.scpi.ScpiLink` for SCPI.
"""

import collections
import logging
import os
import select
import socket
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

from simulators.emulator import Faults, FaultyLink, Firmware
from simulators.scpi import ScpiLink

log = logging.getLogger(__name__)

Dialect = Literal["binary", "scpi"]


class Link(Protocol):
    def receive(self, data: bytes, send: Callable[[bytes], None]) -> bool:
        """Handle received bytes; False when the emulated cable is pulled."""

    def reset(self) -> None:
        """The stream was cut: forget anything half-received."""


def make_link(firmware: Firmware, dialect: Dialect, faults: Faults | None) -> Link:
    """The link for a dialect (SCPI takes only ``disconnect_after`` of the faults)."""
    faults = faults or Faults()
    return ScpiLink(firmware, faults.disconnect_after) if dialect == "scpi" else FaultyLink(firmware, faults)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        select.select([], [fd], [])
        view = view[os.write(fd, view):]


class PtyServer:
    """The emulator on a pseudo-terminal behind a stable symlink, re-created after an unplug."""

    def __init__(self, firmware: Firmware, faults: Faults | None = None, link: Path | None = None,
                 dialect: Dialect = "binary") -> None:
        self.firmware = firmware
        self.faults = faults
        self.dialect = dialect
        self.link = link or Path(f"/tmp/hil-emulator-{os.getpid()}-{id(self):x}")
        self._stop = threading.Event()
        self._master, self._slave = self._open()
        self._thread: threading.Thread | None = None
        self.injected: collections.Counter[str] = collections.Counter()

    @property
    def port(self) -> str:
        """The path a host opens (a symlink to the current pty)."""
        return str(self.link)

    def _open(self) -> tuple[int, int]:
        master, slave = os.openpty()
        tty.setraw(slave)
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)
        return master, slave

    def serve_forever(self) -> None:
        """Serve until :meth:`stop`; an emulated unplug closes the pty and opens a new one."""
        link = make_link(self.firmware, self.dialect, self.faults)
        self.injected = getattr(link, "injected", self.injected)
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._master], [], [], 0.05)
                if not ready:
                    continue
                try:
                    data = os.read(self._master, 1 << 16)
                except OSError:
                    continue
                if not link.receive(data, lambda b: _write_all(self._master, b)):
                    log.info("emulated unplug of %s", self.port)
                    os.close(self._master)
                    os.close(self._slave)
                    time.sleep(0.2)
                    self.firmware.reboot()
                    link.reset()
                    self._master, self._slave = self._open()
        finally:
            os.close(self._master)
            os.close(self._slave)
            self.link.unlink(missing_ok=True)

    def start(self) -> "PtyServer":
        """Serve on a background thread (tests, benchmarks)."""
        self._thread = threading.Thread(target=self.serve_forever, name="hil-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "PtyServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_tcp(firmware: Firmware, port: int, faults: Faults | None = None, host: str = "127.0.0.1",
              dialect: Dialect = "binary", ready: Callable[[int], None] | None = None) -> None:
    """Serve one client at a time on ``host:port`` (port 0: any free one, passed to ``ready``).

    A new connection finds the device as after power-up; an emulated unplug closes the connection.
    """
    link = make_link(firmware, dialect, faults)
    with socket.create_server((host, port)) as server:
        if ready is not None:
            ready(server.getsockname()[1])
        while True:
            conn, _ = server.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            firmware.reboot()
            link.reset()
            with conn:
                while data := conn.recv(1 << 16):
                    if not link.receive(data, conn.sendall):
                        break
