"""keep_freed_memory: a freed large tensor's pages stay with the process for the next one."""

import platform

import pytest
import torch

from hil.allocator import keep_freed_memory


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
    for _ in range(4):  # later ones land on kept pages: the process grows by one block at most
        again = torch.ones(size // 4)
        del again
    assert _rss_bytes() < held + 1.5 * size
