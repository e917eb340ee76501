"""Training the runs of an experiment: one config in a scratch folder, many at once as Ray tasks,
and runs taken from earlier results files instead of trained again (``--reuse``)."""

import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from hil.allocator import keep_freed_memory
from hil.cluster.engine import connect
from hil.config import ConfigError, build_config
from hil.experiments.settings import Settings
from hil.runs import RunFolder
from hil.trainer import Trainer


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
        with Trainer(config, RunFolder.create(config), progress=show) as trainer:
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
    validation = trainer.validation_key
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
    """Trains configs, here or as Ray tasks, or takes them from earlier results files.

    With ``jobs`` > 1 or an ``address`` each run is a Ray task that asks for its torch threads as
    CPUs: a local Ray gets ``jobs`` x threads CPUs, so its scheduler trains ``jobs`` runs at once;
    a cluster at ``address`` (``auto``: the one ``ray start`` made here) fits what its nodes hold.
    Otherwise runs train one by one in this process, without Ray. A run in a ``reuse`` file whose
    config equals the one asked for is taken as it is, marked with the file and the environment
    that produced it.
    """

    def __init__(self, jobs: int = 1, reuse: list[Path] | None = None, address: str | None = None) -> None:
        self.finished = {key: run for path in reuse or [] for key, run in finished_runs(path).items()}
        self.jobs, self.address = jobs, address
        self.ray: ModuleType | None = None  # connected at the first run that trains on Ray
        self.train: Any = None  # _train_in_worker as a Ray remote function, once connected
        self.pending: list[Any] = []  # the ObjectRefs of the runs sent to Ray

    def submit(self, values: dict[str, Any], label: str) -> Future[dict[str, Any]]:
        """The result of :func:`run_config` for ``values``: reused, trained here, or on Ray."""
        earlier = self.finished.get(config_key(values))
        if earlier is None and (self.jobs > 1 or self.address is not None):
            return self._on_ray(values, label)
        done: Future[dict[str, Any]] = Future()
        if earlier is not None:
            print(f"{label}: reused from {earlier['reused_from']['file']}", file=sys.stderr)
        done.set_result({**earlier, "label": label} if earlier is not None else run_config(values, label))
        return done

    def _on_ray(self, values: dict[str, Any], label: str) -> Future[dict[str, Any]]:
        """Send the run to Ray as a task asking for its torch threads as CPUs; the first one connects."""
        threads = max(1, values.get("threads") or 1)
        if self.ray is None:
            self.ray = connect(self.address, self.jobs * threads)
            self.train = self.ray.remote(_train_in_worker)
        ref = self.train.options(num_cpus=threads).remote(values, label)
        self.pending.append(ref)
        return ref.future()

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, error: type[BaseException] | None, *exc: object) -> None:
        """On an error or Ctrl-C, cancel the runs still queued or training on Ray (finished ones stay)."""
        if error is not None and self.ray is not None:
            for ref in self.pending:
                self.ray.cancel(ref)


def _train_in_worker(values: dict[str, Any], label: str) -> dict[str, Any]:
    """:func:`run_config` in a Ray worker: freed memory kept as in ``hil bench`` itself, a line per epoch."""
    keep_freed_memory()
    return run_config(values, label, progress=False)


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
        group[key] = stats(found) if None not in found else None  # runs without a validation split have none
    group["seconds_per_epoch"] = stats([r["train_seconds_per_epoch"] for r in runs])
    group["queries_per_step"] = runs[0]["summary"]["queries_per_step"]
    return group


def stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


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
