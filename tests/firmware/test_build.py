"""The reference firmware builds, passes its native unit tests and fits a small part."""

import subprocess

import pytest

from simulators.qemu import FIRMWARE_DIR, image_memory

FLASH_LIMIT = 256 * 1024
RAM_LIMIT = 64 * 1024


@pytest.mark.parametrize("net", [None, "conv_digits"])
def test_native_unit_tests_pass(firmware_image, net):
    """The same tests, on the default network and on the conv build (checked against a conv reference)."""
    done = subprocess.run(["make", "-C", str(FIRMWARE_DIR), "check", *([f"NET=nets/{net}.h"] if net else [])],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (summary,) = [line for line in done.stdout.splitlines() if " checks, " in line]
    checks, failed = summary.split(" checks, ")
    assert int(checks) > 1000 and failed == "0 failed"


@pytest.mark.parametrize("image", ["firmware_image", "conv_firmware_image"])
def test_image_fits_256k_flash_and_64k_ram(image, request):
    memory = image_memory(request.getfixturevalue(image))
    assert 10_000 < memory["flash_bytes"] <= FLASH_LIMIT
    assert 30_000 < memory["ram_bytes"] <= RAM_LIMIT
