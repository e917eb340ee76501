"""A run folder: resolved config, sealed checkpoints, metrics as they come, a summary.

Durability: the checkpoint is the commit point. An epoch's metrics line is appended (and synced)
before the checkpoint that covers it is written; a resumed run rewrites ``metrics.jsonl`` from the
checkpoint's history, so a crash between the two leaves no duplicate. Checkpoints and the summary
are replaced atomically (written to a temporary file, synced, renamed, the folder synced).

A checkpoint file is one header line, ``hil checkpoint 1 sha256 <hex digest of the rest>``, then a
``torch.save`` archive of plain containers, tensors, numbers and strings. It is loaded only after
its digest matches, and then with ``torch.load(weights_only=True)``, which builds no other objects.
"""

import hashlib
import io
import json
import os
import pickle
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from hil.config import ConfigError, TrainConfig, dump_config, load_config
from hil.data import NPZ

CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
STALE = (METRICS, SUMMARY, f".{CHECKPOINT}.tmp", "tensorboard")
"""What an earlier attempt that never reached a checkpoint may have left; a fresh start removes it."""
MAGIC = b"hil checkpoint 1 sha256 "


class CheckpointError(ConfigError):
    """A checkpoint file is damaged, not a hil checkpoint, or holds more than plain data."""


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash at any instant leaves the old or the new file, synced."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_folder(path.parent)


def seal(state: dict[str, Any]) -> bytes:
    """A checkpoint file's bytes: the header with the SHA-256 of the ``torch.save`` archive, then the archive."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :meth:`RunFolder.save_checkpoint`, refusing anything else in one line."""
    data = path.read_bytes()
    header, _, payload = data.partition(b"\n")
    fix = "restore it from a copy, or start the run again without --resume"
    if not header.startswith(MAGIC):
        what = "is empty" if not data else "is not a hil checkpoint (or was written by an older hil)"
        raise CheckpointError(f"{str(path)!r} {what}; it was not loaded: {fix}")
    if hashlib.sha256(payload).hexdigest().encode() != header[len(MAGIC):]:
        raise CheckpointError(f"{str(path)!r} is damaged (its contents do not match their SHA-256: truncated or "
                              f"changed); it was not loaded: {fix}")
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError):
        raise CheckpointError(f"{str(path)!r} holds more than tensors, containers, numbers and strings (objects "
                              f"that could run code); it was not loaded: {fix}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(path)!r} does not hold a run's state; it was not loaded: {fix}")
    return state


class RunFolder:
    """Paths and writes of one run; every write leaves the folder consistent."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, config: TrainConfig) -> "RunFolder":
        """Make the folder (default ``runs/<time>-<rule>-<dataset>``, an npz file's stem for its dataset) and store
        the config.

        A folder without a checkpoint starts clean: what an earlier attempt wrote is removed.
        """
        dataset = Path(config.dataset.removeprefix(NPZ)).stem if config.dataset.startswith(NPZ) else \
            config.dataset.partition(":")[0]
        path = config.run_dir or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.rule}-{dataset}"
        if (path / CHECKPOINT).exists():
            raise FileExistsError(f"{str(path)!r} already holds a run; use --resume {path} to continue it")
        path.mkdir(parents=True, exist_ok=True)
        for name in STALE:
            stale = path / name
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink(missing_ok=True)
        run = cls(path)
        dump_config(config.model_copy(update={"run_dir": path}), path / CONFIG)
        return run

    def discard_if_unstarted(self) -> None:
        """Remove the folder if it holds nothing but its config: a run refused before it started."""
        if [p.name for p in self.path.iterdir()] == [CONFIG]:
            (self.path / CONFIG).unlink()
            self.path.rmdir()

    def config(self, overrides: dict[str, Any] | None = None) -> TrainConfig:
        return load_config(self.path / CONFIG, overrides)

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write the checkpoint atomically and durably: a crash leaves the previous one intact."""
        write_atomically(self.path / CHECKPOINT, seal(state))

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint's state, None without one; :class:`CheckpointError` for a bad one."""
        return read_checkpoint(self.path / CHECKPOINT) if self.has_checkpoint() else None

    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one epoch's row, synced to disk before the checkpoint that covers it is written."""
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def keep_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Make ``metrics.jsonl`` hold exactly ``rows`` (a checkpoint's history): drops what a crash left beyond it."""
        write_atomically(self.path / METRICS, "".join(json.dumps(row) + "\n" for row in rows).encode())

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_atomically(self.path / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
