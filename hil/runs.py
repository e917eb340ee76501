"""A run folder: resolved config, atomic checkpoints, metrics as they come, a summary."""

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from hil.config import TrainConfig, dump_config, load_config

CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


class RunFolder:
    """Paths and writes of one run; every write leaves the folder consistent."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, config: TrainConfig) -> "RunFolder":
        """Make the folder (default ``runs/<time>-<rule>-<dataset>``) and store the config."""
        path = config.run_dir or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.rule}-{config.dataset}"
        if (path / CHECKPOINT).exists():
            raise FileExistsError(f"{str(path)!r} already holds a run; use --resume {path} to continue it")
        path.mkdir(parents=True, exist_ok=True)
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

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write the checkpoint atomically: a crash leaves the previous one intact."""
        tmp = self.path / f".{CHECKPOINT}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.path / CHECKPOINT)

    def load_checkpoint(self) -> dict[str, Any] | None:
        path = self.path / CHECKPOINT
        return torch.load(path, weights_only=False) if path.exists() else None

    def log_metrics(self, row: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.path / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
