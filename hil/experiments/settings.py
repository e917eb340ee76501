"""What every experiment takes from the command line, and the grid knobs the experiments share."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.data import DEFAULT_DIRS

IMAGE_DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100")


@dataclass
class Settings:
    """What every experiment takes from the command line."""

    out: Path = Path("results")
    seeds: int = 3
    epochs: int | None = None
    datasets: list[str] = field(default_factory=list)
    data_dir: Path | None = None
    smoke: bool = False
    threads: int | None = None
    nets: list[str] | None = None
    """rq1's networks (default: all)."""
    hidden: list[int] | None = None
    name: str | None = None
    jobs: int = 1
    """Runs trained at once; more than one trains them as tasks on a local Ray (or the one at ``address``)."""
    address: str | None = None
    """The Ray cluster to train on (``auto``: the one ``ray start`` made here); None: a local Ray, if any."""
    reuse: list[Path] = field(default_factory=list)
    lrs: list[float] | None = None
    methods: list[str] | None = None
    """rq1's columns (default: all)."""
    sweep_seeds: int | None = None
    """rq1: choose each method's rate on the first this many seeds, train the others at the choice only."""


def available_datasets(settings: Settings) -> list[str]:
    """The datasets named, or digits plus every image dataset installed in its default folder."""
    if settings.smoke:
        return ["digits"]
    if settings.datasets:
        return settings.datasets
    return ["digits", *(name for name in IMAGE_DATASETS if DEFAULT_DIRS[name].is_dir())]


def training(settings: Settings, full_epochs: int, full_lr: float) -> dict[str, Any]:
    """Epochs, cosine-annealed Adam rate and batch: short and small-batch for ``smoke``."""
    return {"epochs": settings.epochs or (5 if settings.smoke else full_epochs), "lr_schedule": "cosine",
            "batch_size": 32 if settings.smoke else 128, "lr": 1e-2 if settings.smoke else full_lr}


def hidden_widths(settings: Settings, smoke: list[int], full: list[int]) -> list[int]:
    """An MLP experiment's hidden widths: ``--hidden``, else the smoke or the full default."""
    return settings.hidden or (smoke if settings.smoke else full)


def data_dir_for(settings: Settings, dataset: str) -> Path | None:
    """``--data-dir`` applies to the image dataset an experiment names (never to digits)."""
    return settings.data_dir if dataset != "digits" else None
