"""Shared helpers of the benchmarks: those of :mod:`hil.experiments`, and an emulator to drive."""

import subprocess
from pathlib import Path

from hil.experiments import environment, plot_curves, pyplot, run_config, write_results

__all__ = ["environment", "plot_curves", "pyplot", "run_config", "start_emulator", "write_results"]


def start_emulator(link: Path, *options: str) -> subprocess.Popen:
    """``hil emulate --pty`` behind the symlink ``link`` (with more emulate options), once it serves."""
    proc = subprocess.Popen(["hil", "emulate", "--pty", "--link", str(link), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == str(link)
    return proc
