"""``hil sweep``: a sweep file's trials on Ray Tune, each a ``hil train`` run, and the results of them all.

A sweep folder holds ``sweep.yaml`` (the file as given), ``runs/`` (every trial as a run folder and in
the run store: ``hil serve --runs DIR/runs`` shows the sweep as it goes), ``tune/`` (Ray Tune's state,
from which ``--resume`` continues without training finished trials again), and the results:
``results.json``, ``results.md``, ``results.png`` and ``best.yaml``, the chosen trial's config, which
``hil train`` accepts.
"""

import json
import logging
import math
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from hil.cluster.devices import resource_name
from hil.cluster.engine import NAMESPACE, connect, require_ray
from hil.cluster.reporting import reports_name, start_reports
from hil.cluster.spec import Sweep, load_sweep, parse_sweep, trial_values
from hil.cluster.trial import Trial, TrialSetup
from hil.config import ConfigError, build_config
from hil.experiments.report import environment, pyplot
from hil.rules import rule_class
from hil.runs import METRICS, SUMMARY
from hil.trainer import headline_keys

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.yaml"
RUNS = "runs"
TUNE = "tune"


def sweep(source: Path | str | dict[str, Any], out: Path | str, address: str | None = None,
          jobs: int | None = None) -> Path:
    """Run a sweep into the new folder ``out``; returns its ``results.md``.

    ``source`` is a sweep file, or its contents as a dict (``{"base": ..., "space": ...}``, see
    :mod:`hil.cluster.spec`). ``address`` is a Ray cluster (default: a local Ray), ``jobs`` the trials at once.
    """
    out = Path(out)
    if isinstance(source, dict):
        spec, text = parse_sweep(source), yaml.safe_dump(source, sort_keys=False)
    else:
        spec, text = load_sweep(Path(source)), Path(source).read_text()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{str(out)!r} is not empty; give a new folder, or continue it with --resume {out}")
    (out / RUNS).mkdir(parents=True, exist_ok=True)
    (out / SWEEP_FILE).write_text(text)
    return _run(spec, out, address, jobs, resume=False)


def resume(out: Path, address: str | None = None, jobs: int | None = None) -> Path:
    """Continue the interrupted sweep in ``out``: finished trials stay, the others start again from their
    last checkpoint."""
    if not (out / TUNE).is_dir():
        raise ConfigError(f"{str(out)!r} holds no sweep to continue (no {TUNE}/ folder); start one with hil sweep")
    return _run(load_sweep(out / SWEEP_FILE), out, address, jobs, resume=True)


def _run(spec: Sweep, out: Path, address: str | None, jobs: int | None, resume: bool) -> Path:
    ray = connect(address, None if jobs is None else jobs * spec.cpus)
    epochs = spec.check().epochs
    reports = start_reports(out / RUNS, reports_name(out))
    resources = {"cpu": spec.cpus, **({resource_name(spec.device): 1} if spec.device else {})}
    setup = TrialSetup(base=spec.base, device=spec.device, cpus=spec.cpus, reports=reports)
    trainable = tune.with_resources(tune.with_parameters(Trial, setup=setup), resources)
    space = {name: values.domain() for name, values in spec.space.items()}
    if resume:
        tuner = tune.Tuner.restore(str((out / TUNE).resolve()), trainable, resume_unfinished=True,
                                   resume_errored=spec.retries > 0, param_space=space)
    else:
        scheduler = None if spec.asha is None else ASHAScheduler(
            max_t=epochs, grace_period=min(spec.asha.grace_period, epochs),
            reduction_factor=spec.asha.reduction_factor)
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.direction, scheduler=scheduler,
                                        num_samples=spec.samples, max_concurrent_trials=jobs,
                                        time_budget_s=spec.time_budget, trial_name_creator=trial_name,
                                        trial_dirname_creator=trial_name),
            run_config=tune.RunConfig(name=TUNE, storage_path=str(out.resolve()), verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=spec.retries),
                                      # a trial's checkpoints are its run folder's, which the driver holds
                                      checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                                      callbacks=[EndRuns(reports_name(out))]))
    with interruptible() as interrupted:
        grid = tuner.fit()
    ray.get(reports.ready.remote())  # the callbacks' last calls have landed
    if interrupted.is_set():
        log.warning("the sweep was interrupted; continue it with: hil sweep --resume %s", out)
        raise KeyboardInterrupt
    return write_results(spec, out, [_trial_row(result, out, spec) for result in grid])


def trial_name(trial: Any) -> str:
    """A trial's name and folder: its id, which is also its run's id."""
    return str(trial.trial_id)


class EndRuns(tune.Callback):
    """Marks a failed trial's run failed where its trainer could not (its process was killed, its node died).

    It names the driver's reports actor rather than holding it: Ray Tune keeps callbacks with its state,
    and a resumed sweep has a new actor of the same name.
    """

    def __init__(self, reports: str) -> None:
        self.reports = reports

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        reports = require_ray().get_actor(self.reports, namespace=NAMESPACE)
        reports.end_if_live.remote(trial.trial_id, "failed", "the trial's process failed or was killed")


@contextmanager
def interruptible() -> Iterator[threading.Event]:
    """Ctrl-C and SIGTERM end the sweep as Ray Tune's own interrupt does (its state saved for ``--resume``),
    and set the event this yields, so the sweep knows it did not end by itself."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_signal(signum: int, frame: object) -> None:
        interrupted.set()
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):  # Ray Tune is not listening yet
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGUSR1)  # Ray Tune's interrupt: stop trials, save state, return

    tune_handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interrupted
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if tune_handler is None:
            del os.environ["TUNE_DISABLE_SIGINT_HANDLER"]
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_handler


def _trial_row(result: Any, out: Path, spec: Sweep) -> dict[str, Any]:
    """One trial: its drawn values, status, each epoch's metrics (from the run folder the driver holds), and the
    keys of its rows that the sweep's metric and the test accuracy are read from (its rule's headline ones)."""
    trial_id = Path(result.path).name
    folder = out / RUNS / trial_id
    history = [json.loads(line) for line in (folder / METRICS).read_text().splitlines()] \
        if (folder / METRICS).is_file() else []
    summary = json.loads((folder / SUMMARY).read_text()) if (folder / SUMMARY).is_file() else {}
    drawn = dict(result.config or {})
    test_key, val_key = headline_keys(rule_class(build_config(trial_values(spec.base, drawn)).rule).layer_local)
    return {"trial": trial_id, "drawn": drawn, "history": history,
            "status": summary.get("status") or ("failed" if result.error else "stopped early"),
            "error": None if result.error is None else f"{type(result.error).__name__}: {result.error}",
            "device": summary.get("device"), "run_dir": str(folder),
            "metric_key": val_key if spec.metric == "val_accuracy" else spec.metric, "test_key": test_key}


def _choose_epoch(row: dict[str, Any], direction: str) -> None:
    """Add the trial's best epoch by its metric (validation), that metric and the test accuracy there (None if
    it reported none)."""
    key = row["metric_key"]
    seen = [epoch for epoch in row["history"] if epoch.get(key) is not None]
    best = (max if direction == "max" else min)(seen, key=lambda epoch: epoch[key]) if seen else None
    row.update(best_epoch=best and best["epoch"], value=best and best[key],
               test_accuracy=best and best[row["test_key"]])


def write_results(spec: Sweep, out: Path, rows: list[dict[str, Any]]) -> Path:
    """``results.json``, ``results.md``, ``results.png`` and ``best.yaml``; returns ``results.md``."""
    for row in rows:
        _choose_epoch(row, spec.direction)
    chosen = sorted([r for r in rows if r["value"] is not None], key=lambda r: r["value"],
                    reverse=spec.direction == "max")
    ranked = chosen + [r for r in rows if r["value"] is None]
    if chosen:
        best = chosen[0]
        config = build_config(trial_values(spec.base, best["drawn"])).model_dump(mode="json", exclude={"run_dir"})
        (out / "best.yaml").write_text(f"# the best trial of {out} ({best['trial']}) by {spec.metric} "
                                       f"({spec.direction}); train it with: hil train {out / 'best.yaml'}\n"
                                       + yaml.safe_dump(config, sort_keys=False))
    payload = {"environment": environment(), "sweep": spec.model_dump(mode="json"), "trials": ranked}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    table = _table(spec, ranked)
    (out / "results.md").write_text(f"{table}\nProduced by `{payload['environment']['command']}`; trials chosen on "
                                    f"{spec.metric} ({spec.direction}, the best epoch of each), test accuracy "
                                    "reported at that epoch.\n")
    _plot(out / "results.png", spec, ranked)
    return out / "results.md"


def _table(spec: Sweep, rows: list[dict[str, Any]]) -> str:
    names = list(spec.space)
    head = ["trial", *names, spec.metric, "test accuracy", "epoch", "epochs", "status", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["trial"], *(_cell(row["drawn"].get(n)) for n in names), _cell(row["value"]),
                 _cell(row["test_accuracy"]), _cell(row["best_epoch"]), str(len(row["history"])), row["status"],
                 row["device"] or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if not math.isnan(value) else "-"
    return "-" if value is None else str(value)


def _plot(path: Path, spec: Sweep, rows: list[dict[str, Any]]) -> None:
    """The metric per epoch of every trial."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        points = [(e["epoch"], e[row["metric_key"]]) for e in row["history"] if e.get(row["metric_key"]) is not None]
        if points:
            ax.plot(*zip(*points), marker=".", label=row["trial"])
    ax.set_xlabel("epoch")
    ax.set_ylabel(spec.metric)
    ax.grid(alpha=0.3)
    if len(rows) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


