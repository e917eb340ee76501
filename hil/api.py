"""Runs started from code: ``hil.train`` for notebooks, and the start-up the ``hil train`` command shares."""

from pathlib import Path
from typing import Any

from hil.config import ConfigError, TrainConfig, build_config, load_config
from hil.data import Dataset
from hil.runs import RunFolder
from hil.trainer import Trainer


def start(overrides: dict[str, Any], config_file: Path | None = None, resume: Path | None = None,
          progress: bool = True, data: Dataset | None = None) -> Trainer:
    """The run's config and folder, and a trainer ready to fit; a fresh run's folder goes if this fails.

    ``overrides`` are config fields over ``config_file`` (or the defaults), or over the stored config of the
    run folder ``resume`` continues. ``data`` is a dataset only Python has (see :class:`~hil.trainer.Trainer`).
    """
    if resume is not None:
        if config_file is not None:
            raise ConfigError("give either a config file or --resume RUN_DIR, not both")
        run = RunFolder(resume)
        if not run.has_checkpoint():
            raise ConfigError(f"{str(resume)!r} has no checkpoint to resume from")
        config = run.config(overrides)
    else:
        config = load_config(config_file, overrides) if config_file else build_config(overrides)
        run = RunFolder.create(config)
    try:
        return Trainer(config, run, progress=progress, data=data)
    except BaseException:
        if resume is None:
            run.discard_if_unstarted()
        raise


def train(config: TrainConfig | None = None, *, dataset: Dataset | str | None = None,
          resume: Path | str | None = None, progress: bool = True, **fields: Any) -> dict[str, Any]:
    """Train a run as ``hil train`` does, writing its run folder; returns the run summary.

    Parameters
    ----------
    config
        A config to start from; ``fields`` (any :class:`~hil.config.TrainConfig` field) go over it.
    dataset
        A dataset name (``digits``, ``npz:PATH``, ...) or a :class:`~hil.data.Dataset`, e.g. from
        :func:`hil.data.from_arrays` or :func:`hil.data.from_torch`.
    resume
        A run folder to continue from its checkpoint (``fields`` may change only the resumable ones);
        a run on arrays given in Python continues only here, given the same arrays.
    progress
        Show the progress bar and a line per epoch.

    Ctrl-C stops the run at the next step with a checkpoint; the summary's status is then ``stopped``.
    """
    data = dataset if isinstance(dataset, Dataset) else None
    if dataset is not None:
        fields["dataset"] = dataset.name if isinstance(dataset, Dataset) else dataset
    if config is not None:
        if resume is not None:
            raise ConfigError("give either a config or resume=RUN_DIR, not both")
        fields = {**config.model_dump(exclude_unset=True), **fields}
    with start(fields, resume=None if resume is None else Path(resume), progress=progress, data=data) as trainer:
        return trainer.fit()
