"""One trial of a sweep: a ``hil train`` run in a Ray worker, one Ray Tune step per epoch.

The run trains in a scratch folder on the worker's node and reports to the driver (:mod:`.reporting`),
under the trial's id as its run id. A trial that needs a bench device leases one URL from its node's
registry for its whole run (:mod:`.devices`). A trial started again (a retry, ``hil sweep --resume``)
continues from the checkpoint the driver holds for it. When the sweep's scheduler stops a trial early,
its run ends as a stopped run: checkpoint, summary and final status, like Ctrl-C on ``hil train``.
"""

import math
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from hil.api import start
from hil.cluster.devices import lease_device
from hil.cluster.reporting import StoreClient
from hil.cluster.spec import METRICS, trial_values
from hil.config import RESUMABLE
from hil.trainer import Trainer


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares."""

    base: dict[str, Any]
    device: str | None
    """The kind of bench device each trial leases, or None (the config's device)."""
    cpus: int
    reports: Any
    """The driver's :class:`~hil.cluster.reporting.Reports` actor."""


class Trial(tune.Trainable):
    """A run as a Ray Tune trainable: :meth:`setup` starts it, each :meth:`step` trains an epoch."""

    def setup(self, config: dict[str, Any], setup: TrialSetup) -> None:
        run_id = self.trial_id
        self.client = StoreClient(setup.reports)
        self.ended = False
        values = {**trial_values(setup.base, config), "threads": setup.cpus}
        with ExitStack() as on_failure:
            if setup.device is not None:
                values["device"] = on_failure.enter_context(lease_device(setup.device, run_id))
            scratch = Path(tempfile.mkdtemp(prefix="hil-trial-"))
            on_failure.callback(shutil.rmtree, scratch, ignore_errors=True)
            folder = scratch / run_id
            resume = self.client.fetch(run_id, folder)
            fields = {**values, "run_dir": folder}
            if resume:
                fields = {k: v for k, v in fields.items() if k in RESUMABLE}
            self.trainer: Trainer = on_failure.enter_context(start(fields, resume=folder if resume else None,
                                                                   progress=False))
            self.trainer.store = self.client
            self.ended = self.trainer.epoch >= self.trainer.config.epochs  # it finished before Tune saw it end
            if not self.ended:
                self.trainer.begin()
            self.resources = on_failure.pop_all()
            """Released by :meth:`cleanup`: the device lease, the scratch folder, the open device."""

    def step(self) -> dict[str, Any]:
        """Train an epoch, ship the run folder to the driver, and report the epoch's metrics."""
        trainer = self.trainer
        if not self.ended:
            try:
                trainer.train_epoch()
            except BaseException as err:
                trainer.fail(err)
                self.ended = True
                self.resources.close()
                raise
            self.client.ship(self.trial_id, trainer.run.path)
        done = trainer.epoch >= trainer.config.epochs or trainer.stop.requested  # stopped from the service
        if not trainer.history:  # stopped in its first epoch: nothing measured
            return {**dict.fromkeys(METRICS, math.nan), "done": done}
        row = trainer.history[-1]
        metrics = {k: v for k, v in row.items() if isinstance(v, int | float)}
        metrics["test_accuracy"] = row[trainer.headline_key]
        if trainer.validation_key in row:
            metrics["val_accuracy"] = row[trainer.validation_key]
        return {**metrics, "done": done}

    def cleanup(self) -> None:
        """End the run (stopped early if epochs remain), ship its summary, close the device, end the lease."""
        with self.resources:
            if not self.ended:
                trainer = self.trainer
                if trainer.epoch < trainer.config.epochs and not trainer.stop.requested:
                    trainer.stop.request("stopped by the sweep: early (ASHA, behind its peers) or interrupted")
                trainer.end()
                self.client.ship(self.trial_id, trainer.run.path)
                self.ended = True
