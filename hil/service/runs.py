"""The runs: service health, the list of runs, one run, and its metrics rows."""

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from hil import __version__
from hil.service.state import MAX_CURSOR, READS, KnownRun, ServiceState, State, errors
from hil.store import LIVE, Metric

HEALTHY_SECONDS = 60.0  # a live run that wrote nothing for this long is reported stale
HEALTH_COUNTERS = ("link_reconnects", "link_crc_errors", "link_timeouts", "link_rtt_p50_ms", "link_rtt_p99_ms",
                   "device_seconds", "writes_per_cell", "queries")


class RunRecord(BaseModel):
    """What the store records of every run."""

    id: str
    status: str = Field(description="running, paused, finished, stopped or failed")
    device: str
    identity: str
    seed: int
    started: float = Field(description="Unix time")
    stopped: float | None
    exit_reason: str | None
    heartbeat: float = Field(description="Unix time of the last metric the trainer wrote")
    config: dict[str, Any]


class RunSummary(RunRecord):
    latest: dict[str, float] = Field(description="newest value of each metric the run wrote (test_accuracy_cumulative, "
                                                 "val_accuracy_cumulative, train_loss, loss...), for comparing runs")


class RunDetail(RunRecord):
    run_dir: str
    counters: dict[str, float] = Field(description="latest device and link counters")


class MetricsPage(BaseModel):
    rows: list[Metric]
    next: int = Field(description="pass as `since` to get only newer rows")


class DeviceHealth(BaseModel):
    run_id: str
    identity: str
    status: str
    healthy: bool = Field(description="the run wrote within the last minute")
    seconds_since_heartbeat: float
    counters: dict[str, float]


class ServiceStatus(BaseModel):
    service: Literal["ok"] = "ok"
    version: str
    runs_dir: str
    runs_by_status: dict[str, int]
    devices: list[DeviceHealth]


router = APIRouter(dependencies=READS)
read_errors = errors(401, 403)
run_errors = errors(401, 403, 404)


@router.get("/api/status", responses=read_errors)
def status(state: State) -> ServiceStatus:
    """Service health, runs per status, and the health of every live run's device."""
    return state.shared.get("status", lambda: _service_status(state))


def _service_status(state: ServiceState) -> ServiceStatus:
    runs = state.store.runs()
    counts: dict[str, int] = {}
    for run in runs:
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    now = time.time()
    devices = []
    for run in runs:
        if run["status"] in LIVE:
            counters = state.store.run(run["id"])["counters"]
            age = now - run["heartbeat"]
            devices.append(DeviceHealth(run_id=run["id"], identity=run["identity"], status=run["status"],
                                        healthy=age < HEALTHY_SECONDS or run["status"] == "paused",
                                        seconds_since_heartbeat=age,
                                        counters={k: v for k, v in counters.items() if k in HEALTH_COUNTERS}))
    return ServiceStatus(version=__version__, runs_dir=str(state.runs_dir), runs_by_status=counts, devices=devices)


@router.get("/api/runs", responses=read_errors)
def runs(state: State) -> list[RunSummary]:
    """Every run in the folder, newest first, with its config and latest metrics (the dashboard's run table)."""
    return state.shared.get("runs", lambda: [RunSummary(**run, latest=latest_metrics(state, run))
                                             for run in state.store.runs()])


def latest_metrics(state: ServiceState, run: dict[str, Any]) -> dict[str, float]:
    """A run's latest metrics, read again only when its heartbeat moved (every metrics write moves it).

    The read scans all of a run's rows; a sweep's finished runs are then read once, not on every poll.
    (A resumed run's rows dropped past its checkpoint still show until its next write, a step later.)
    """
    beat, latest = state.latest.get(run["id"], (None, {}))
    if beat != run["heartbeat"]:
        latest = state.store.latest_metrics(run["id"])
        state.latest[run["id"]] = (run["heartbeat"], latest)
    return latest


@router.get("/api/runs/{run_id}", responses=run_errors)
def run(detail: KnownRun) -> RunDetail:
    """One run: config, status, device identity and latest counters."""
    return RunDetail(**detail)


@router.get("/api/runs/{run_id}/metrics", responses=run_errors)
def metrics(state: State, detail: KnownRun,
            since: Annotated[int, Query(ge=0, le=MAX_CURSOR, description="return rows with id above this")] = 0,
            limit: Annotated[int, Query(ge=1, le=100000)] = 10000) -> MetricsPage:
    """Metrics rows (loss and queries/s per step; accuracies per epoch) newer than ``since``."""
    rows = state.tail.page(detail["id"], since, limit)
    return MetricsPage(rows=rows, next=rows[-1].id if rows else since)
