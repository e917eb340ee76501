"""The seed papers' experiments as commands: ``hil bench rq1``, ``hil bench rq2``, ``hil bench mdfa``.

Each trains a grid of configs over several seeds on the simulated crossbar and writes
``NAME.json`` (every run's config, summary and history), ``NAME.md`` (mean +- std over the seeds,
published numbers beside) and ``NAME.png`` to a results folder. ``smoke`` is a short version on
digits that CI runs; the benchmark scripts in ``bench/`` share the helpers here. Runs may train in
several processes at once (``jobs``), and runs already in earlier results files with the very same
config are taken from there instead of trained again (``reuse``), so a long grid can grow by seeds.
"""

import json
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from hil.allocator import keep_freed_memory
from hil.config import ConfigError, build_config
from hil.data import DEFAULT_DIRS
from hil.runs import RunFolder
from hil.trainer import Trainer

# the poster's test accuracies (BP, MF+AD, MF+DD P=4; cumulative), reference.md section 1
POSTER = {
    ("mnist", "MLP"): (0.973, 0.950, 0.933), ("fashion-mnist", "MLP"): (0.879, 0.860, 0.837),
    ("cifar10", "MLP"): (0.486, 0.526, 0.376), ("cifar100", "MLP"): (0.208, 0.189, 0.109),
    ("mnist", "CNN"): (0.989, 0.965, 0.949), ("fashion-mnist", "CNN"): (0.911, 0.883, 0.842),
    ("cifar10", "CNN"): (0.731, 0.552, 0.418), ("cifar100", "CNN"): (0.430, 0.274, 0.176),
}
# rq1's columns: the baselines, the poster's weight-space estimator and the activity-space one
METHODS: dict[str, dict[str, Any]] = {
    "bp": {"rule": "bp"},
    "mf-ad": {"rule": "mf-ad"},
    "weight": {"rule": "mf-dd", "estimator": "weight", "directions": 4},
    "activity": {"rule": "mf-dd", "estimator": "activity"},
}
METHOD_TITLES = {"bp": "BP", "mf-ad": "MF+AD", "weight": "MF+DD weight (P=4)", "activity": "MF+DD activity"}
# rq1's Adam rates without --lrs: a weight-space estimate's noise shortens Adam's steps along the
# gradient, so it trains best at a higher rate (Fashion MLP 256-256, P=4: 0.844 at 3e-3, 0.859 at 1e-2)
RQ1_RATES = {"bp": 3e-3, "mf-ad": 3e-3, "weight": 1e-2, "activity": 3e-3}
IMAGE_DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100")
NETS = {  # rq1's networks: full size, and the smoke version's
    "MLP": {"full": {"hidden": [1000, 1000]}, "smoke": {"hidden": [32]}},
    "CNN": {"full": {"conv": "32c3p2,64c3p2,128c3", "hidden": []}, "smoke": {"conv": "8c3p2,16c3", "hidden": []}},
}


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
    nets: list[str] = field(default_factory=lambda: list(NETS))
    hidden: list[int] | None = None
    name: str | None = None
    jobs: int = 1
    reuse: list[Path] = field(default_factory=list)
    lrs: list[float] | None = None
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    sweep_seeds: int | None = None
    """rq1: choose each method's rate on the first this many seeds, train the others at the choice only."""


# ---------------------------------------------------------------------------- running and writing


def run_config(values: dict[str, Any], label: str, keep_trainer: bool = False,
               progress: bool | None = None) -> dict[str, Any]:
    """Train one config in a scratch run folder; return its summary, history and epoch times.

    With ``keep_trainer`` the result also holds the trainer (model and device) under "trainer".
    ``progress`` shows the epoch's bar (default: when stderr is a terminal); without it each
    epoch is one line, labelled, so runs in parallel workers can be told apart.
    """
    with tempfile.TemporaryDirectory() as scratch:
        config = build_config({**values, "run_dir": Path(scratch) / "run"})
        show = sys.stderr.isatty() if progress is None else progress
        trainer = Trainer(config, RunFolder.create(config), progress=show)
        if not show:
            trainer.on_epoch = partial(_epoch_line, label)
        started = time.perf_counter()
        summary = trainer.fit()
        wall = time.perf_counter() - started
    history = trainer.history
    seconds = [b["train_seconds"] - a["train_seconds"] for a, b in zip([{"train_seconds": 0.0}, *history], history)]
    print(f"{label}: test accuracy {summary['test_accuracy']:.4f} (final layer "
          f"{summary['test_accuracy_final_layer']:.4f}), {wall:.0f} s", file=sys.stderr)
    result = {
        "label": label, "config": config.model_dump(mode="json", exclude={"run_dir"}),
        "summary": summary, "history": history, "wall_seconds": wall,
        "train_seconds_per_epoch": sum(seconds) / len(seconds),
    }
    validation = trainer.headline_key.replace("test_", "val_")
    if validation in history[-1]:  # the best epoch is chosen on validation, and its test accuracy reported
        best = max(history, key=lambda row: row[validation])
        result.update(best_epoch=best["epoch"], best_validation_accuracy=best[validation],
                      best_epoch_test_accuracy=best[trainer.headline_key])
    if keep_trainer:
        result["trainer"] = trainer
    return result


def _epoch_line(label: str, trainer: Trainer, row: dict[str, Any]) -> None:
    print(f"{label}: epoch {row['epoch']}/{trainer.config.epochs}, test accuracy {row[trainer.headline_key]:.4f}, "
          f"{row['train_seconds']:.0f} s training", file=sys.stderr, flush=True)


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


# ---------------------------------------------------------------------------- seeds and statistics


def config_key(values: dict[str, Any]) -> str:
    """The full config ``values`` make (defaults filled in), as text: equal keys train alike."""
    config = build_config({**values, "run_dir": Path("unused")})
    return json.dumps(config.model_dump(mode="json", exclude={"run_dir"}), sort_keys=True)


# what a run stored before a field existed trained as: weight-space mf-dd, no validation split
LEGACY_FIELDS = {"estimator": "weight", "validation": 0.0}


def finished_runs(path: Path) -> dict[str, dict[str, Any]]:
    """The runs of a results file by :func:`config_key`, each marked with the file and its environment.

    A run that file itself reused keeps its mark: the file that trained it, and how. Fields added
    since a run was stored take the values it trained with (:data:`LEGACY_FIELDS`).
    """
    try:
        payload = json.loads(path.read_text())
        origin = {"file": str(path), "environment": payload["environment"]}
        return {config_key({**LEGACY_FIELDS, **run["config"]}): {"reused_from": origin, **run}
                for group in payload["groups"] for run in group["runs"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is not a results file of hil bench ({type(err).__name__}: {err}); "
                          "give a NAME.json that hil bench wrote") from None


class Runner:
    """Trains configs, in ``jobs`` worker processes, or takes them from earlier results files.

    A run in a ``reuse`` file whose config equals the one asked for is taken as it is, marked with
    the file and the environment that produced it.
    """

    def __init__(self, jobs: int = 1, reuse: list[Path] | None = None) -> None:
        self.finished = {key: run for path in reuse or [] for key, run in finished_runs(path).items()}
        self.pool = None if jobs <= 1 else ProcessPoolExecutor(
            jobs, mp_context=get_context("spawn"), initializer=keep_freed_memory)

    def submit(self, values: dict[str, Any], label: str) -> Future[dict[str, Any]]:
        """The result of :func:`run_config` for ``values``: reused, trained here, or in a worker."""
        earlier = self.finished.get(config_key(values))
        if self.pool is not None and earlier is None:
            return self.pool.submit(run_config, values, label, progress=False)
        done: Future[dict[str, Any]] = Future()
        if earlier is not None:
            print(f"{label}: reused from {earlier['reused_from']['file']}", file=sys.stderr)
        done.set_result({**earlier, "label": label} if earlier is not None else run_config(values, label))
        return done

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def over_seeds(runner: Runner, settings: Settings, values: dict[str, Any], label: str,
               seeds: range | None = None) -> dict[str, Any]:
    """Submit ``values`` once per seed (default: all of them); :func:`settle` waits and adds mean +- std."""
    return {"label": label, "runs": [
        runner.submit({**values, "seed": seed, "threads": settings.threads}, f"{label}, seed {seed}")
        for seed in (range(settings.seeds) if seeds is None else seeds)]}


def settle(group: dict[str, Any]) -> dict[str, Any]:
    """Replace a group's pending runs by their results and add their statistics."""
    runs = group["runs"] = [r.result() if isinstance(r, Future) else r for r in group["runs"]]
    for key in ("test_accuracy", "test_accuracy_final_layer", "validation_accuracy"):
        found = [r["summary"].get(key) for r in runs]
        group[key] = _stats(found) if None not in found else None  # runs without a validation split have none
    group["seconds_per_epoch"] = _stats([r["train_seconds_per_epoch"] for r in runs])
    group["queries_per_step"] = runs[0]["summary"]["queries_per_step"]
    return group


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def _pm(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.4f} +- {stats['std']:.4f}"


def _mean_curve(group: dict[str, Any], key: str) -> list[float]:
    epochs = len(group["runs"][0]["history"])
    return [statistics.fmean(r["history"][e][key] for r in group["runs"]) for e in range(epochs)]


def _finish(settings: Settings, name: str, groups: list[dict[str, Any]], table: str, extra: dict[str, Any],
            plot: Callable[[Path], None]) -> Path:
    name = settings.name or (f"{name}_smoke" if settings.smoke else name)
    env = {**environment(), "jobs": settings.jobs}
    if settings.threads:  # each run's own setting, also where runs train in worker processes
        env["cpu_threads"] = settings.threads
    payload = {"environment": env, "seeds": list(range(settings.seeds)), **extra, "groups": groups}
    write_results(settings.out, name, payload, table + _reuse_note(groups))
    plot(settings.out / f"{name}.png")
    print(table)
    return settings.out / f"{name}.md"


def _reuse_note(groups: list[dict[str, Any]]) -> str:
    """Which runs came from earlier results files, and what produced them (empty when none did)."""
    runs = [r for g in groups for r in g["runs"]]
    # by file and command: a results file rewritten in place may hold runs of each of its versions
    counts = Counter((r["reused_from"]["file"], r["reused_from"]["environment"]["command"],
                      r["reused_from"]["environment"]["torch"]) for r in runs if "reused_from" in r)
    return "".join(f"\n{count} of the {len(runs)} runs are reused from `{file}`, produced by "
                   f"`{command}` (torch {torch_version}).\n"
                   for (file, command, torch_version), count in counts.items())


def available_datasets(settings: Settings) -> list[str]:
    """The datasets named, or digits plus every image dataset installed in its default folder."""
    if settings.smoke:
        return ["digits"]
    if settings.datasets:
        return settings.datasets
    return ["digits", *(name for name in IMAGE_DATASETS if DEFAULT_DIRS[name].is_dir())]


def _training(settings: Settings, full_epochs: int, full_lr: float) -> dict[str, Any]:
    """Epochs, cosine-annealed Adam rate and batch: short and small-batch for ``smoke``."""
    return {"epochs": settings.epochs or (5 if settings.smoke else full_epochs), "lr_schedule": "cosine",
            "batch_size": 32 if settings.smoke else 128, "lr": 1e-2 if settings.smoke else full_lr}


def _hidden(settings: Settings, smoke: list[int], full: list[int]) -> list[int]:
    """An MLP experiment's hidden widths: ``--hidden``, else the smoke or the full default."""
    return settings.hidden or (smoke if settings.smoke else full)


def _data_dir(settings: Settings, dataset: str) -> Path | None:
    """``--data-dir`` applies to the image dataset an experiment names (never to digits)."""
    return settings.data_dir if dataset != "digits" else None


# ---------------------------------------------------------------------------- rq1


def rq1(settings: Settings) -> Path:
    """The poster's accuracy table: BP, MF+AD and MF+DD (weight and activity space), MLP and CNN, per dataset.

    Each method trains at every rate of ``--lrs`` (default: its own rate, :data:`RQ1_RATES`) and
    is reported at the rate with the best mean validation accuracy over the seeds.
    """
    nets = {net: NETS[net]["smoke" if settings.smoke else "full"] for net in settings.nets}
    rates = {method: settings.lrs or [1e-2 if settings.smoke else RQ1_RATES[method]] for method in settings.methods}
    sweep = range(min(settings.sweep_seeds or settings.seeds, settings.seeds))
    groups = []
    with Runner(settings.jobs, settings.reuse) as runner:
        for dataset in available_datasets(settings):
            for net, shape in nets.items():
                for method in settings.methods:
                    for lr in rates[method]:
                        values = {**_training(settings, 20, lr), "lr": lr, **shape, **METHODS[method],
                                  "dataset": dataset, "data_dir": _data_dir(settings, dataset)}
                        label = f"{dataset} {net} {method}" + (f" lr {lr:g}" if len(rates[method]) > 1 else "")
                        group = over_seeds(runner, settings, values, label, sweep)
                        groups.append({**group, "dataset": dataset, "net": net, "method": method, "values": values,
                                       "rule": METHODS[method]["rule"], "lr": values["lr"]})
        groups = [settle(g) for g in groups]
        choose_rates(groups, ("dataset", "net", "method"))
        best = [g for g in groups if g["best_lr"]]
        rest = range(len(sweep), settings.seeds)
        for g in best:  # the seeds the sweep left out, at the rate it chose
            g["runs"] += over_seeds(runner, settings, g.pop("values"), g["label"], rest)["runs"]
        best = [settle(g) for g in best]
    for g in groups:
        g.pop("values", None)
    rows = []
    for dataset, net in dict.fromkeys((g["dataset"], g["net"]) for g in best):
        cells = {g["method"]: g for g in best if (g["dataset"], g["net"]) == (dataset, net)}
        poster = POSTER.get((dataset, net))
        rows.append(f"| {dataset} | {net} | " + " | ".join(
            _pm(g["test_accuracy"])
            + ("" if g["rule"] == "bp" else f" ({g['test_accuracy_final_layer']['mean']:.4f})")
            + (f", lr {g['lr']:g}" if len(rates[method]) > 1 else "")
            for method, g in cells.items()) + f" | {' / '.join(map(str, poster)) if poster else 'n/a'} |")
    epochs = best[0]["runs"][0]["summary"]["epochs"]
    chosen_on = "" if len(sweep) == settings.seeds else f" over seeds 0-{len(sweep) - 1}"
    how = (f"each at the Adam rate of {', '.join(f'{lr:g}' for lr in settings.lrs)} with the best mean validation "
           f"accuracy{chosen_on}" if settings.lrs and len(settings.lrs) > 1 else
           "Adam from " + ", ".join(f"{m} {rates[m][0]:g}" for m in settings.methods) + " (not chosen in this run)")
    table = (f"{settings.seeds} seeds, {epochs} epochs, cosine decay, {how}; ideal simulated crossbar; "
             f"{_split_note(best)}; mean +- std of test accuracy (cumulative for Mono-Forward; final layer mean in "
             "parentheses).\n\n"
             f"| dataset | net | {' | '.join(METHOD_TITLES[m] for m in settings.methods)} | poster BP / AD / DD |\n"
             f"|---|---|{'---|' * len(settings.methods)}---|\n" + "\n".join(rows) + "\n")
    return _finish(settings, "rq1", groups, table, {"nets": nets, "rates": rates},
                   lambda path: _plot_rq1(path, best))


def choose_rates(groups: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    """Mark ``best_lr`` on the group of each ``keys`` cell with the best mean validation accuracy.

    A cell that tried one rate has nothing to choose; one that tried several needs a validation
    split (the test set is only reported).
    """
    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for g in groups:
        cells.setdefault(tuple(g[k] for k in keys), []).append(g)
    for cell, tried in cells.items():
        if len(tried) > 1 and any(g["validation_accuracy"] is None for g in tried):
            raise ConfigError(f"{' '.join(map(str, cell))}: runs without a validation split cannot choose among "
                              "rates; train with validation > 0")
        top = max(tried, key=lambda g: g["validation_accuracy"]["mean"] if len(tried) > 1 else 0.0)
        for g in tried:
            g["best_lr"] = g is top


def _split_note(groups: list[dict[str, Any]]) -> str:
    """How much of the training set the runs held out for validation."""
    splits = sorted({r["summary"].get("validation") or 0.0 for g in groups for r in g["runs"]})
    return ("no validation split" if splits == [0.0] else
            " or ".join(f"{s:g}" for s in splits) + " of the training set held out for validation")


def _plot_rq1(path: Path, groups: list[dict[str, Any]]) -> None:
    plt = pyplot()
    panels = sorted({(g["dataset"], g["net"]) for g in groups})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (dataset, net) in zip(axes[0], panels):
        for g in (g for g in groups if (g["dataset"], g["net"]) == (dataset, net)):
            key = "test_accuracy_final_layer" if g["rule"] == "bp" else "test_accuracy_cumulative"
            curve = _mean_curve(g, key)
            ax.plot(range(1, len(curve) + 1), curve, label=METHOD_TITLES[g["method"]])
        ax.set_title(f"{dataset} {net}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"test accuracy (mean of {len(groups[0]['runs'])} seeds)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- rq2


def rq2(settings: Settings) -> Path:
    """MF+DD in weight space (the poster's question) for P in {1, 2, 4, 8}, mean and projection:
    accuracy, validation loss, time per epoch."""
    dataset = "digits" if settings.smoke else (settings.datasets or ["fashion-mnist"])[0]
    train = {**_training(settings, 20, 3e-3), "hidden": _hidden(settings, [32], [1000, 1000]),
             "rule": "mf-dd", "estimator": "weight", "dataset": dataset, "data_dir": _data_dir(settings, dataset)}
    with Runner(settings.jobs, settings.reuse) as runner:
        groups = [{**over_seeds(runner, settings, {**train, "directions": p, "combine": combine}, f"P={p} {combine}"),
                   "directions": p, "combine": combine}
                  for p in (1, 2, 4, 8) for combine in ("mean", "projection")]
        groups = [settle(g) for g in groups]
    rows = [f"| {g['directions']} | {g['combine']} | {_pm(g['test_accuracy'])} | "
            f"{g['test_accuracy_final_layer']['mean']:.4f} | {_mean_curve(g, 'val_loss')[-1]:.4f} | "
            f"{g['seconds_per_epoch']['mean']:.2f} | {g['queries_per_step']:.0f} |" for g in groups]
    table = (f"{dataset}, MLP {train['hidden']}, {settings.seeds} seeds, {train['epochs']} epochs, ideal simulated "
             f"crossbar, weight-space estimate; {_split_note(groups)}.\n\n"
             "| P | combine | test acc. cumulative | final layer | validation loss | "
             "train s / epoch | queries / step |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return _finish(settings, "rq2", groups, table, {"train": train},
                   lambda path: _plot_rq2(path, groups))


def _plot_rq2(path: Path, groups: list[dict[str, Any]]) -> None:
    plt = pyplot()
    fig, (loss_ax, acc_ax, time_ax) = plt.subplots(1, 3, figsize=(14, 4))
    colors: dict[int, Any] = {}
    for g in groups:
        style = "-" if g["combine"] == "mean" else "--"
        curve = _mean_curve(g, "val_loss")
        line, = loss_ax.plot(range(1, len(curve) + 1), curve, style, color=colors.get(g["directions"]),
                             label=f"P={g['directions']} {g['combine']}")
        colors[g["directions"]] = line.get_color()
    for combine, style in (("mean", "o-"), ("projection", "s--")):
        chosen = [g for g in groups if g["combine"] == combine]
        ps = [g["directions"] for g in chosen]
        acc_ax.errorbar(ps, [g["test_accuracy"]["mean"] for g in chosen],
                        yerr=[g["test_accuracy"]["std"] for g in chosen], fmt=style, capsize=3, label=combine)
        time_ax.plot(ps, [g["seconds_per_epoch"]["mean"] for g in chosen], style, label=combine)
    loss_ax.set(xlabel="epoch", ylabel="validation loss (final layer)", title="validation loss")
    acc_ax.set(xlabel="P", ylabel="test accuracy (cumulative)", title="accuracy against P")
    time_ax.set(xlabel="P", ylabel="train seconds per epoch", title="time against P")
    for ax in (acc_ax, time_ax):  # P on a log-2 axis, ticked at the P run
        ax.set_xscale("log", base=2)
        ax.set_xticks(ps, [str(p) for p in ps])
        ax.minorticks_off()
    for ax in (loss_ax, acc_ax, time_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- mdfa

FASHION_PAIRS = [(0, 6), (2, 4), (5, 7), (1, 3)]  # T-shirt/shirt, pullover/coat, sandal/sneaker, trouser/dress
DIGIT_PAIRS = [(3, 8), (1, 7)]


MDFA_RULES = ("bp", "dfa", "mdfa")


def mdfa(settings: Settings) -> Path:
    """BP, DFA and monotone DFA on binary tasks (pairs of classes) and on all classes, tanh MLP.

    With several ``lrs`` every rule trains at each, and the table reports each rule at its best
    (by mean validation accuracy over the seeds), so no rule is judged at a rate that suits another.
    """
    dataset = "digits" if settings.smoke else (settings.datasets or ["fashion-mnist"])[0]
    pairs = DIGIT_PAIRS if dataset == "digits" else FASHION_PAIRS
    tasks: list[list[int] | None] = [list(p) for p in pairs] + [None]
    train = {**_training(settings, 10, 1e-2), "hidden": _hidden(settings, [32, 32], [256, 256]),
             "device": "sim://crossbar?activation=tanh", "dataset": dataset,
             "data_dir": _data_dir(settings, dataset)}
    lrs = settings.lrs or [train["lr"]]
    names = [f"classes {c[0]} vs {c[1]}" if c else "all classes" for c in tasks]
    with Runner(settings.jobs, settings.reuse) as runner:
        groups = [{**over_seeds(runner, settings, {**train, "rule": rule, "classes": classes, "lr": lr},
                                f"{name} {rule}" + (f" lr {lr:g}" if len(lrs) > 1 else "")),
                   "task": name, "rule": rule, "lr": lr}
                  for classes, name in zip(tasks, names) for rule in MDFA_RULES for lr in lrs]
        groups = [settle(g) for g in groups]
    choose_rates(groups, ("task", "rule"))
    best = {(g["task"], g["rule"]): g for g in groups if g["best_lr"]}
    rows = []
    for name in names:
        cells = [best[name, rule] for rule in MDFA_RULES]
        gap = cells[2]["test_accuracy"]["mean"] - cells[1]["test_accuracy"]["mean"]
        rows.append(f"| {name} | " + " | ".join(
            _pm(g["test_accuracy"]) + (f" (lr {g['lr']:g})" if len(lrs) > 1 else "") for g in cells)
            + f" | {gap:+.4f} |")
    rates = (f"; each rule at its best Adam learning rate of {', '.join(f'{lr:g}' for lr in lrs)} (by mean "
             "validation accuracy over the seeds)" if len(lrs) > 1 else f"; Adam learning rate {lrs[0]:g}")
    table = (f"{dataset}, tanh MLP {train['hidden']}, {settings.seeds} seeds, {train['epochs']} epochs, "
             f"ideal simulated crossbar, {_split_note(groups)}; test accuracy of the final layer{rates}.\n\n"
             "| task | BP | DFA | mDFA | mDFA - DFA |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return _finish(settings, "mdfa", groups, table, {"train": train, "lrs": lrs},
                   lambda path: _plot_mdfa(path, groups, names, lrs))


def _plot_mdfa(path: Path, groups: list[dict[str, Any]], tasks: list[str], lrs: list[float]) -> None:
    """Each rule at its best rate per task (bars); with several rates, accuracy against the rate per task."""
    plt = pyplot()
    sweep = len(lrs) > 1
    fig = plt.figure(figsize=(max(1.8 * len(tasks) + 3, 3 * len(tasks)), 7.5 if sweep else 4))
    grid = fig.add_gridspec(2 if sweep else 1, len(tasks))
    ax = fig.add_subplot(grid[0, :])
    for offset, rule in enumerate(MDFA_RULES):
        chosen = [next(g for g in groups if g["task"] == t and g["rule"] == rule and g["best_lr"]) for t in tasks]
        ax.bar([i + (offset - 1) * 0.27 for i in range(len(tasks))], [g["test_accuracy"]["mean"] for g in chosen],
               0.27, yerr=[g["test_accuracy"]["std"] for g in chosen], capsize=3, label=rule)
    ax.set_xticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_ylabel("test accuracy" + (" (best rate)" if sweep else ""))
    low = min(g["test_accuracy"]["mean"] for g in groups if g["best_lr"])
    ax.set_ylim(max(0.0, low - 0.05), 1)  # the gaps between rules are small beside the accuracies
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    for column, task in enumerate(tasks if sweep else []):
        sub = fig.add_subplot(grid[1, column])
        for rule in MDFA_RULES:
            tried = [g for g in groups if g["task"] == task and g["rule"] == rule]
            sub.errorbar([g["lr"] for g in tried], [g["test_accuracy"]["mean"] for g in tried],
                         yerr=[g["test_accuracy"]["std"] for g in tried], fmt="o-", capsize=2, label=rule)
        sub.set_xscale("log")
        sub.set_xticks(lrs, [f"{lr:g}" for lr in lrs], fontsize=7)
        sub.minorticks_off()
        sub.set_title(task, fontsize=9)
        sub.set_xlabel("learning rate", fontsize=8)
        sub.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


EXPERIMENTS: dict[str, Callable[[Settings], Path]] = {"rq1": rq1, "rq2": rq2, "mdfa": mdfa}
