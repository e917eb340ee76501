"""Shared helpers of the benchmarks: run a config, time its epochs, write JSON, markdown, PNG."""

import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from hil.config import build_config
from hil.runs import RunFolder
from hil.trainer import Trainer


def run_rule(values: dict[str, Any], label: str, keep_trainer: bool = False) -> dict[str, Any]:
    """Train one config in a scratch run folder; return its summary, history and epoch times.

    With ``keep_trainer`` the result also holds the trainer (model and device) under "trainer".
    """
    with tempfile.TemporaryDirectory() as scratch:
        config = build_config({**values, "run_dir": Path(scratch) / "run"})
        trainer = Trainer(config, RunFolder.create(config), progress=sys.stderr.isatty())
        started = time.perf_counter()
        summary = trainer.fit()
        wall = time.perf_counter() - started
    history = trainer.history
    seconds = [b["train_seconds"] - a["train_seconds"] for a, b in zip([{"train_seconds": 0.0}, *history], history)]
    cumulative = summary["test_accuracy_cumulative"] is not None
    headline = "test_accuracy_cumulative" if cumulative else "test_accuracy_final_layer"
    best = max(history, key=lambda row: row[headline])
    print(f"{label}: test accuracy {summary['test_accuracy']:.4f} (final layer "
          f"{summary['test_accuracy_final_layer']:.4f}), {wall:.0f} s", file=sys.stderr)
    result = {
        "label": label, "config": config.model_dump(mode="json", exclude={"run_dir"}),
        "summary": summary, "history": history, "wall_seconds": wall,
        "train_seconds_per_epoch": sum(seconds) / len(seconds),
        "best_epoch": best["epoch"], "best_test_accuracy": best[headline],
    }
    if keep_trainer:
        result["trainer"] = trainer
    return result


def start_emulator(link: Path, *options: str) -> subprocess.Popen:
    """``hil emulate --pty`` behind the symlink ``link`` (with more emulate options), once it serves."""
    proc = subprocess.Popen(["hil", "emulate", "--pty", "--link", str(link), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == str(link)
    return proc


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(), "machine": platform.machine(),
            "command": " ".join(["python", *(shlex.quote(a) for a in sys.argv)])}


def write_results(out: Path, name: str, payload: dict[str, Any], table: str) -> None:
    """Write ``name.json`` and ``name.md`` (table plus the command that produced it)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    command = payload["environment"]["command"]
    (out / f"{name}.md").write_text(f"{table}\nProduced by `{command}` "
                                    f"(torch {payload['environment']['torch']}, "
                                    f"{payload['environment']['cpu_threads']} CPU threads).\n")


def plot_curves(path: Path, runs: list[dict[str, Any]], title: str) -> None:
    """Test accuracy per epoch of every run (cumulative solid, final layer dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        epochs = [row["epoch"] for row in run["history"]]
        line, = ax.plot(epochs, [row["test_accuracy_final_layer"] for row in run["history"]], "--", alpha=0.6)
        if run["summary"]["test_accuracy_cumulative"] is not None:
            ax.plot(epochs, [row["test_accuracy_cumulative"] for row in run["history"]], "-",
                    color=line.get_color(), label=f"{run['label']} (cumulative)")
        line.set_label(f"{run['label']} (final layer)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
