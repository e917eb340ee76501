"""TensorBoard scalars of a run, written when the optional ``tensorboard`` package is installed."""

from pathlib import Path
from typing import Any


def open_writer(run_dir: Path) -> Any | None:
    """A ``SummaryWriter`` logging to ``run_dir/tensorboard``, or None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
