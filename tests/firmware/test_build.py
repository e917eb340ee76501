"""The reference firmware builds, passes its native unit tests and fits a small part."""

import subprocess

from simulators.qemu import FIRMWARE_DIR, image_memory

FLASH_LIMIT = 256 * 1024
RAM_LIMIT = 64 * 1024


def test_native_unit_tests_pass(firmware_image):
    done = subprocess.run(["make", "-C", str(FIRMWARE_DIR), "check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (summary,) = [line for line in done.stdout.splitlines() if " checks, " in line]
    checks, failed = summary.split(" checks, ")
    assert int(checks) > 1000 and failed == "0 failed"


def test_image_fits_256k_flash_and_64k_ram(firmware_image):
    memory = image_memory(firmware_image)
    assert 10_000 < memory["flash_bytes"] <= FLASH_LIMIT
    assert 30_000 < memory["ram_bytes"] <= RAM_LIMIT
