"""Writing an experiment's results: JSON, a markdown table with the command that produced it, plots."""

import json
import platform
import shlex
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hil.experiments.settings import Settings


def environment() -> dict[str, Any]:
    argv = sys.argv
    prefix = ["hil"] if Path(argv[0]).name == "hil" else ["python", argv[0]]
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(), "machine": platform.machine(),
            "command": " ".join([*prefix, *(shlex.quote(a) for a in argv[1:])])}


def write_results(out: Path, name: str, payload: dict[str, Any], table: str) -> None:
    """Write ``name.json`` and ``name.md`` (table plus the command that produced it)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    command = payload["environment"]["command"]
    (out / f"{name}.md").write_text(f"{table}\nProduced by `{command}` "
                                    f"(torch {payload['environment']['torch']}, "
                                    f"{payload['environment']['cpu_threads']} CPU threads).\n")


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(path: Path, runs: list[dict[str, Any]], title: str) -> None:
    """Test accuracy per epoch of every run (cumulative solid, final layer dashed)."""
    plt = pyplot()
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


def pm(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.4f} +- {stats['std']:.4f}"


def mean_curve(group: dict[str, Any], key: str) -> list[float]:
    epochs = len(group["runs"][0]["history"])
    return [statistics.fmean(r["history"][e][key] for r in group["runs"]) for e in range(epochs)]


def finish(settings: Settings, name: str, groups: list[dict[str, Any]], table: str, extra: dict[str, Any],
            plot: Callable[[Path], None]) -> Path:
    name = settings.name or (f"{name}_smoke" if settings.smoke else name)
    env = {**environment(), "jobs": settings.jobs}
    if settings.threads:  # each run's own setting, also where runs train on Ray
        env["cpu_threads"] = settings.threads
    payload = {"environment": env, "seeds": list(range(settings.seeds)), **extra, "groups": groups}
    write_results(settings.out, name, payload, table + reuse_note(groups))
    plot(settings.out / f"{name}.png")
    print(table)
    return settings.out / f"{name}.md"


def reuse_note(groups: list[dict[str, Any]]) -> str:
    """Which runs came from earlier results files, and what produced them (empty when none did)."""
    runs = [r for g in groups for r in g["runs"]]
    # by file and command: a results file rewritten in place may hold runs of each of its versions
    counts = Counter((r["reused_from"]["file"], r["reused_from"]["environment"]["command"],
                      r["reused_from"]["environment"]["torch"]) for r in runs if "reused_from" in r)
    return "".join(f"\n{count} of the {len(runs)} runs are reused from `{file}`, produced by "
                   f"`{command}` (torch {torch_version}).\n"
                   for (file, command, torch_version), count in counts.items())


def split_note(groups: list[dict[str, Any]]) -> str:
    """How much of the training set the runs held out for validation."""
    splits = sorted({r["summary"].get("validation") or 0.0 for g in groups for r in g["runs"]})
    return ("no validation split" if splits == [0.0] else
            " or ".join(f"{s:g}" for s in splits) + " of the training set held out for validation")
