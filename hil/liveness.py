"""Whether the trainers of live runs are still there.

A trainer's :class:`Heartbeat` writes the time to the store every :data:`HEARTBEAT_SECONDS`
from a thread of its own, so a long step, an evaluation or a pause keep beating; a process
killed by any signal stops. The service's :class:`Watch` marks a live run ``failed`` when

* its process is gone, where the run was started on this host (a process id means something
  only on its own host; this catches a kill within a check), or
* its heartbeat has not changed for ``timeout`` seconds of the service's own monotonic clock,
  wherever the trainer runs (a trainer on another machine writing to a shared store, a process
  id reused by another program). Comparing values, not the trainer's timestamps with the
  service's clock, makes it immune to clock skew between machines, and a suspended laptop
  (whose monotonic clock stops) wakes without declaring its runs dead.
"""

import logging
import sqlite3
import threading
import time

from hil.store import LIVE, RunStore

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
"""How often a trainer writes its heartbeat (one small write, not one per step)."""
DEFAULT_TIMEOUT = 20.0
"""Seconds without a heartbeat after which the service marks a run failed (``--heartbeat-timeout``)."""
MIN_TIMEOUT = 3 * HEARTBEAT_SECONDS
"""The shortest timeout allowed: a few missed beats on a busy machine must not kill a run."""


class Heartbeat:
    """A daemon thread that beats for one run until :meth:`stop`, or until the run is no longer live."""

    def __init__(self, store: RunStore, run_id: str, interval: float = HEARTBEAT_SECONDS) -> None:
        self.store = store
        self.run_id = run_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"hil-heartbeat-{run_id}", daemon=True)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                status = self.store.beat(self.run_id)
            except sqlite3.Error as err:  # a locked or unwritable store: try again at the next beat
                log.warning("heartbeat of run %s not written: %s", self.run_id, err)
            else:
                if status not in LIVE:
                    log.warning("the run store marks run %s %s; this process goes on, without heartbeats",
                                self.run_id, status)
                    return
            self._stop.wait(self.interval)


class Watch:
    """Finds the live runs whose trainer is gone and marks them failed (with the reason)."""

    def __init__(self, store: RunStore, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not timeout >= MIN_TIMEOUT:
            raise ValueError(f"the heartbeat timeout must be at least {MIN_TIMEOUT:g} s (trainers beat every "
                             f"{HEARTBEAT_SECONDS:g} s), got {timeout:g}")
        self.store = store
        self.timeout = timeout
        self._seen: dict[tuple[str, int], tuple[float, float]] = {}  # (run, pid) -> (beat, when it last changed)
        self._lock = threading.Lock()

    def check(self) -> list[str]:
        """Check every live run; returns the ids marked failed now."""
        dead = self.store.mark_dead_runs()
        now = time.monotonic()
        with self._lock:
            live = {(run["id"], run["pid"]): run for run in self.store.live_runs()}
            for gone in set(self._seen) - set(live):
                del self._seen[gone]
            for key, run in live.items():
                beat, since = self._seen.get(key, (None, now))
                if beat != run["beat"]:
                    self._seen[key] = (run["beat"], now)
                elif now - since > self.timeout and self.store.mark_failed(run["id"], run["pid"], (
                        f"no heartbeat from the training process {run['pid']} on {run['host']} for "
                        f"{self.timeout:g} s (killed, crashed, or cut off from the store)")):
                    dead.append(run["id"])
        for run_id in dead:
            log.warning("run %s marked failed: its trainer is gone", run_id)
        return dead
