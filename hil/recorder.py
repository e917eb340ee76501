"""What a trainer reports as it goes, and the controls it obeys.

Everything goes to the runs folder's store (:mod:`hil.store`), which the service reads; scalars
also go to TensorBoard when it is installed. Stop, pause and resume requests from the service
arrive through the store and are acted on at step boundaries. A heartbeat thread tells the
service that the process is still there (:mod:`hil.liveness`).
"""

import logging
import time
from collections.abc import Callable
from typing import Any

from devices.interface import Device
from hil.liveness import Heartbeat
from hil.runs import RunFolder
from hil.store import RunStore
from hil.tensorboard import open_writer

log = logging.getLogger(__name__)

COUNTER_SECONDS = 1.0  # how often device counters go to the store
PAUSE_POLL_SECONDS = 0.2


class RunRecorder:
    """One run's reports: metrics, events, device counters, final status; and its controls."""

    def __init__(self, run: RunFolder, config: dict[str, Any], device_url: str, identity: str, seed: int,
                  store: RunStore | None = None) -> None:
        """Record the run as started in ``store`` (default: the store of the folder that holds the run's)."""
        self.store = RunStore.for_runs(run.path.parent) if store is None else store
        self.run_id = run.path.name
        self.tensorboard = open_writer(run.path)
        self._counters_at = 0.0
        self._reconnects = 0.0
        self.store.start_run(self.run_id, run.path, config, device_url, identity, seed)
        self.heartbeat = Heartbeat(self.store, self.run_id).start()

    def rewind(self, step: int) -> None:
        """Drop the run's metric rows past ``step``: what a killed trainer logged after its last checkpoint."""
        self.store.drop_metrics_after(self.run_id, step)

    def event(self, kind: str, data: dict[str, Any] | None = None) -> None:
        self.store.log_event(self.run_id, kind, data)

    def step(self, step: int, epoch: int, loss: float, queries_per_second: float, device: Device) -> None:
        """Per-step metrics; device counters at most every :data:`COUNTER_SECONDS`."""
        self.store.log_metrics(self.run_id, step, epoch, {"loss": loss, "queries_per_second": queries_per_second})
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("train/loss", loss, step)
        if time.monotonic() - self._counters_at > COUNTER_SECONDS:
            self.counters(device)

    def epoch(self, step: int, epoch: int, values: dict[str, float]) -> None:
        self.store.log_metrics(self.run_id, step, epoch, values)
        if self.tensorboard is not None:
            for name, value in values.items():
                self.tensorboard.add_scalar(f"epoch/{name}", value, epoch)

    def counters(self, device: Device) -> None:
        """Device and link counters to the store; a new reconnect becomes an event."""
        counters = device.counters.as_dict()
        self.store.set_counters(self.run_id, counters)
        reconnects = counters.get("link_reconnects", 0.0)
        if reconnects > self._reconnects:
            self.event("reconnect", {"reconnects": reconnects})
        self._reconnects = reconnects
        self._counters_at = time.monotonic()

    def finish(self, status: str, reason: str | None, data: dict[str, Any]) -> None:
        """The final event, then the final status (a stream that sees the status has seen the event)."""
        self.heartbeat.stop()
        self.event(status, data)
        self.store.set_status(self.run_id, status, reason)
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def control(self, where: dict[str, Any], interrupted: Callable[[], bool]) -> str | None:
        """The service's request for this step boundary: ``"stop"`` or None.

        A pause blocks here (status ``paused``) until resume, stop or ``interrupted()`` (Ctrl-C);
        ``where`` goes into the paused and resumed events.
        """
        action = self.store.take_control(self.run_id)
        if action != "pause":
            return "stop" if action == "stop" else None
        self.store.set_status(self.run_id, "paused")
        self.event("paused", where)
        log.warning("paused from the service; waiting for resume or stop")
        while (action := self.store.take_control(self.run_id)) not in ("resume", "stop") and not interrupted():
            time.sleep(PAUSE_POLL_SECONDS)
        self.store.set_status(self.run_id, "running")
        if action == "stop":
            return "stop"
        self.event("resumed", where)
        return None
