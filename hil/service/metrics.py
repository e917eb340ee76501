"""Prometheus ``/metrics``: per-run gauges read from the store on every scrape."""

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from hil.service.state import READS, State, errors
from hil.store import LIVE, RunStore

router = APIRouter(dependencies=READS)


@router.get("/metrics", response_class=Response, responses=errors(401, 403))
def prometheus(state: State) -> Response:
    """Prometheus text format: per-run gauges (queries/s, accuracy, loss, link errors, round trips)."""
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)


def store_registry(store: RunStore) -> CollectorRegistry:
    """A registry whose one collector reads ``store``."""
    registry = CollectorRegistry()
    registry.register(_StoreCollector(store))
    return registry


class _StoreCollector:
    """Reads the store on every scrape, so any number of trainers and services agree."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def collect(self) -> Any:
        latest = GaugeMetricFamily("hil_run_metric", "latest value of a run's metric", labels=["run", "name"])
        counters = GaugeMetricFamily("hil_device_counter", "latest device and link counter of a run",
                                     labels=["run", "name"])
        live = GaugeMetricFamily("hil_run_live", "1 while a run is running or paused", labels=["run", "status"])
        for run in self.store.runs():
            live.add_metric([run["id"], run["status"]], 1.0 if run["status"] in LIVE else 0.0)
            for name, value in self.store.latest_metrics(run["id"]).items():
                latest.add_metric([run["id"], name], value)
            for name, value in self.store.run(run["id"])["counters"].items():
                counters.add_metric([run["id"], name], value)
        yield from (live, latest, counters)
