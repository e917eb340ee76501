"""The reference firmware (``firmware/``) on QEMU's emulated Cortex-M3 board, its UART on a pty.

Firmware in the loop: the C code a real board would run answers ``SerialDevice`` over a real
pseudo-terminal, so ``hil train --device serial://<pty>`` exercises the protocol document end to
end. Needs ``qemu-system-arm`` and, to build the image, ``gcc-arm-none-eabi`` and
``libnewlib-arm-none-eabi`` (Debian packages).
"""

import logging
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

from devices.errors import DeviceError

log = logging.getLogger(__name__)

FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "firmware"
DEFAULT_IMAGE = FIRMWARE_DIR / "build" / "mps2-an385" / "hil-firmware.elf"
QEMU = "qemu-system-arm"
_PTY_LINE = re.compile(rb"char device redirected to (\S+) \(label serial0\)")


class FirmwareError(DeviceError):
    """The firmware could not be built or booted; the message says what is missing."""


def firmware_nets() -> list[str]:
    """The networks the firmware can be built for besides its default: headers in ``firmware/nets``."""
    return sorted(p.stem for p in (FIRMWARE_DIR / "nets").glob("*.h"))


def image_path(net: str | None = None) -> Path:
    """Where ``make qemu`` puts the image: the default network's, or that of ``nets/NET.h``."""
    return DEFAULT_IMAGE if net is None else FIRMWARE_DIR / "build" / net / "mps2-an385" / "hil-firmware.elf"


def build_firmware(net: str | None = None) -> Path:
    """Run ``make -C firmware qemu`` (for ``nets/NET.h`` when given) and return the image.

    Raises with make's output, or naming the networks there are when ``net`` is not one.
    """
    if not (FIRMWARE_DIR / "Makefile").exists():
        raise FirmwareError(f"no firmware sources at {FIRMWARE_DIR}: they ship with the hil repository, "
                            "not the wheel; run from a clone")
    if net is not None and net not in firmware_nets():
        raise FirmwareError(f"no network {net!r} in {FIRMWARE_DIR / 'nets'}; choose from "
                            f"{', '.join(firmware_nets())}, or leave it out for core/network.h's")
    for tool in ("make", "arm-none-eabi-gcc"):
        if shutil.which(tool) is None:
            raise FirmwareError(f"{tool} not found; install it (Debian: apt-get install make gcc-arm-none-eabi "
                                "libnewlib-arm-none-eabi)")
    command = ["make", "-C", str(FIRMWARE_DIR), "qemu", *([f"NET=nets/{net}.h"] if net else [])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise FirmwareError(f"make qemu failed:\n{done.stdout}{done.stderr}")
    return image_path(net)


def image_memory(image: Path) -> dict[str, int]:
    """Flash and RAM an image needs, in bytes, from ``arm-none-eabi-size -A``.

    Flash holds code, constants and the initial values of data; RAM holds data, bss and the stack.
    """
    out = subprocess.run(["arm-none-eabi-size", "-A", str(image)], capture_output=True, text=True, check=True)
    sizes = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return {"flash_bytes": sizes[".text"] + sizes.get(".ARM.exidx", 0) + sizes[".data"],
            "ram_bytes": sizes[".data"] + sizes[".bss"] + sizes[".stack"]}


class QemuFirmware:
    """``qemu-system-arm -machine mps2-an385`` running a firmware image, UART0 on a pty.

    ``port`` is the pty (or ``link``, a stable symlink to it). Use as a context manager, or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(self, image: Path = DEFAULT_IMAGE, link: Path | None = None) -> None:
        self.image = Path(image)
        self.link = link
        self.pty: str | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> str:
        if self.pty is None:
            raise FirmwareError("QEMU is not running; call start() first")
        return str(self.link or self.pty)

    def command(self) -> list[str]:
        return [QEMU, "-machine", "mps2-an385", "-cpu", "cortex-m3", "-kernel", str(self.image),
                "-display", "none", "-monitor", "none", "-serial", "pty"]

    def start(self, timeout: float = 10.0) -> "QemuFirmware":
        """Boot the image and wait until QEMU names the pty of the board's UART."""
        if not self.image.exists():
            raise FirmwareError(f"firmware image {self.image} does not exist; build it with `make -C firmware qemu` "
                                "or `hil firmware build`")
        if shutil.which(QEMU) is None:
            raise FirmwareError(f"{QEMU} not found; install it (Debian: apt-get install qemu-system-arm)")
        self._process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT)
        assert self._process.stdout is not None
        output = b""
        deadline = time.monotonic() + timeout
        while (match := _PTY_LINE.search(output)) is None:
            left = deadline - time.monotonic()
            if left <= 0 or self._process.poll() is not None:
                self.stop()
                raise FirmwareError(f"QEMU did not start the board's UART: {output.decode(errors='replace')!r}")
            if select.select([self._process.stdout], [], [], left)[0]:
                output += os.read(self._process.stdout.fileno(), 4096)
        self.pty = match.group(1).decode()
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.pty)
            tmp.replace(self.link)
        log.info("firmware %s running on %s", self.image.name, self.port)
        return self

    def wait(self) -> int:
        """Block until QEMU exits; its exit status."""
        assert self._process is not None
        return self._process.wait()

    def stop(self) -> None:
        """Stop QEMU (the pty disappears)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    def __enter__(self) -> "QemuFirmware":
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
