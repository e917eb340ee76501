"""The reference firmware builds, passes its native unit tests and fits a small part."""

import subprocess
from pathlib import Path

from simulators.qemu import FIRMWARE_DIR

FLASH_LIMIT = 256 * 1024
RAM_LIMIT = 64 * 1024


def section_sizes(image: Path) -> dict[str, int]:
    """Section name -> bytes, from ``arm-none-eabi-size -A``."""
    out = subprocess.run(["arm-none-eabi-size", "-A", str(image)], capture_output=True, text=True, check=True)
    sizes = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def test_native_unit_tests_pass(firmware_image):
    done = subprocess.run(["make", "-C", str(FIRMWARE_DIR), "check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (summary,) = [line for line in done.stdout.splitlines() if " checks, " in line]
    checks, failed = summary.split(" checks, ")
    assert int(checks) > 1000 and failed == "0 failed"


def test_image_fits_256k_flash_and_64k_ram(firmware_image):
    sizes = section_sizes(firmware_image)
    flash = sizes[".text"] + sizes.get(".ARM.exidx", 0) + sizes[".data"]
    ram = sizes[".data"] + sizes[".bss"] + sizes[".stack"]
    assert 10_000 < flash <= FLASH_LIMIT
    assert 30_000 < ram <= RAM_LIMIT
