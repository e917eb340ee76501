"""Trials report to the driver: one actor on the driver's node holds the sweep's run store and run folders.

A trial trains in a scratch folder on whatever node it lands on. What its trainer would write to a
runs folder's store (:class:`~hil.store.RunStore`) goes to the driver's :class:`Reports` actor instead,
through a :class:`StoreClient`, so ``hil serve --runs DIR`` on the driver shows every trial live; after
every epoch (its checkpoint committed) and at the end the trial ships its run folder's files there too,
so a trial that is started again (a retry, ``hil sweep --resume``) continues from its last checkpoint
wherever it lands. Calls from one trial reach the actor in the order they were made.
"""

import os
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from hil.cluster.engine import NAMESPACE, require_ray
from hil.runs import CHECKPOINT, CONFIG, METRICS, SUMMARY, write_atomically
from hil.store import RunStore

SHIPPED = (CONFIG, METRICS, CHECKPOINT, SUMMARY)
"""A run folder's files that live on the driver (TensorBoard logs stay on the trial's node)."""
CONTROL_SECONDS = 0.5
"""How often a trial asks the driver for the service's stop/pause requests (not at every step)."""


class Reports:
    """The driver's run store and run folders, written for trials anywhere (a Ray actor on the driver's node)."""

    def __init__(self, runs_dir: str) -> None:
        self.runs_dir = Path(runs_dir)
        self.store = RunStore.for_runs(self.runs_dir)

    def start_run(self, run_id: str, config: dict[str, Any], device: str, identity: str, seed: int, pid: int,
                  host: str) -> None:
        """Record a trial's run as running in process ``pid`` on ``host``, in its folder on this node."""
        path = self.runs_dir / run_id
        self.store.start_run(run_id, path, {**config, "run_dir": str(path)}, device, identity, seed, pid, host)

    def log_metrics(self, run_id: str, step: int, epoch: int, values: dict[str, float]) -> None:
        self.store.log_metrics(run_id, step, epoch, values)

    def drop_metrics_after(self, run_id: str, step: int) -> int:
        return self.store.drop_metrics_after(run_id, step)

    def log_event(self, run_id: str, kind: str, data: dict[str, Any] | None = None) -> None:
        self.store.log_event(run_id, kind, data)

    def set_counters(self, run_id: str, values: dict[str, float]) -> None:
        self.store.set_counters(run_id, values)

    def set_status(self, run_id: str, status: str, reason: str | None = None) -> None:
        self.store.set_status(run_id, status, reason)

    def beat(self, run_id: str) -> str | None:
        return self.store.beat(run_id)

    def take_control(self, run_id: str) -> str | None:
        return self.store.take_control(run_id)

    def end_if_live(self, run_id: str, status: str, reason: str) -> bool:
        """Give a run its final status if its trainer could not (stopped early by the scheduler, or killed)."""
        if run_id not in {run["id"] for run in self.store.live_runs()}:
            return False
        self.store.log_event(run_id, status, {"reason": reason})
        self.store.set_status(run_id, status, reason)
        return True

    def ready(self) -> bool:
        """Answers once every call sent before it has been carried out."""
        return True

    def write_files(self, run_id: str, files: dict[str, bytes]) -> None:
        """Replace files of a run's folder on this node; the config names this folder as the run's."""
        folder = self.runs_dir / run_id
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            if name == CONFIG:
                data = yaml.safe_dump({**yaml.safe_load(data), "run_dir": str(folder)}, sort_keys=False).encode()
            write_atomically(folder / name, data)

    def read_files(self, run_id: str) -> dict[str, bytes]:
        """The shipped files of a run's folder on this node (none for a run not seen before)."""
        folder = self.runs_dir / run_id
        return {name: (folder / name).read_bytes() for name in SHIPPED if (folder / name).is_file()}


def reports_name(sweep_dir: Path) -> str:
    """The name of a sweep's :class:`Reports` actor (the same for the sweep and its resumption)."""
    return f"reports:{sweep_dir.resolve()}"


def start_reports(runs_dir: Path, name: str) -> Any:
    """The :class:`Reports` actor ``name`` for ``runs_dir``, on this (the driver's) node, for as long as it runs."""
    ray = require_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(Reports).options(name=name, namespace=NAMESPACE, num_cpus=0,
                                       scheduling_strategy=here).remote(str(runs_dir.resolve()))


class StoreClient:
    """The part of :class:`~hil.store.RunStore` a trainer writes, sent to the driver's :class:`Reports`.

    Writes are sent without waiting (they arrive in order); the run's start, its status and the reads
    wait for the answer, so a trial that ends has delivered everything.
    """

    def __init__(self, reports: Any) -> None:
        self.reports = reports
        self._asked = 0.0

    def _wait(self, call: Any) -> Any:
        return require_ray().get(call)

    def start_run(self, run_id: str, run_dir: Path, config: dict[str, Any], device: str, identity: str,
                  seed: int) -> None:
        self._wait(self.reports.start_run.remote(run_id, config, device, identity, seed, os.getpid(),
                                                 socket.gethostname()))

    def log_metrics(self, run_id: str, step: int, epoch: int, values: dict[str, float]) -> None:
        self.reports.log_metrics.remote(run_id, step, epoch, values)

    def drop_metrics_after(self, run_id: str, step: int) -> int:
        return int(self._wait(self.reports.drop_metrics_after.remote(run_id, step)))

    def log_event(self, run_id: str, kind: str, data: dict[str, Any] | None = None) -> None:
        self.reports.log_event.remote(run_id, kind, data)

    def set_counters(self, run_id: str, values: dict[str, float]) -> None:
        self.reports.set_counters.remote(run_id, values)

    def set_status(self, run_id: str, status: str, reason: str | None = None) -> None:
        self._wait(self.reports.set_status.remote(run_id, status, reason))

    def beat(self, run_id: str) -> str | None:
        return self._wait(self.reports.beat.remote(run_id))

    def take_control(self, run_id: str) -> str | None:
        """The service's pending request, asked at most every :data:`CONTROL_SECONDS` (a round trip each)."""
        if time.monotonic() - self._asked < CONTROL_SECONDS:
            return None
        self._asked = time.monotonic()
        return self._wait(self.reports.take_control.remote(run_id))

    def ship(self, run_id: str, folder: Path) -> None:
        """Copy the run folder's :data:`SHIPPED` files to the driver's folder of the run (and wait)."""
        files = {name: (folder / name).read_bytes() for name in SHIPPED if (folder / name).is_file()}
        self._wait(self.reports.write_files.remote(run_id, files))

    def fetch(self, run_id: str, folder: Path) -> bool:
        """Put the driver's files of the run into ``folder``; whether they hold a checkpoint to resume from."""
        files = self._wait(self.reports.read_files.remote(run_id))
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return CHECKPOINT in files
