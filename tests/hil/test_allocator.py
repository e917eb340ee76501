"""keep_freed_memory: a freed large tensor's pages stay with the process for the next one."""

import platform

import pytest
import torch

from hil.allocator import KEEP_BYTES, keep_freed_memory


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        line = next(row for row in status if row.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_a_freed_large_tensor_stays_resident_and_is_reused():
    assert keep_freed_memory()
    size = 400 * 2**20
    big = torch.ones(size // 4)
    held = _rss_bytes()
    del big
    assert _rss_bytes() > held - size // 2  # kept: with glibc's defaults the free unmaps all 400 MB
    for _ in range(12):  # later blocks reuse kept memory: the heap stays within what it may keep
        again = torch.ones(size // 4)  # (an aligned block does not always fit a freed hole, so it
        del again  # may grow by a few blocks first)
    assert _rss_bytes() < held + KEEP_BYTES + size
