"""The status service: a FastAPI app over a runs folder's store, the dashboard, Prometheus metrics.

Everything but the dashboard page and its static files needs the token (:mod:`hil.access`)
unless reads are opened (``public_reads``); the token goes in ``Authorization: Bearer <token>``
or, for the browser's EventSource, a ``token`` query parameter. Controls are written to the store
and the running trainer acts on them at its next step boundary. The service watches the live
runs' trainers (:mod:`hil.liveness`) and marks a run whose trainer is gone ``failed``.
"""

import asyncio
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, Field

from hil import __version__
from hil.access import OPEN_PATHS, Bound, HostCheck, check_token_text, tokens_match
from hil.liveness import DEFAULT_TIMEOUT, Watch
from hil.sharing import SHARED_SECONDS, MetricsTail, SharedReads
from hil.store import LIVE, Event, Metric, RunStore, UnknownRun

log = logging.getLogger(__name__)

HEALTHY_SECONDS = 60.0  # a live run that wrote nothing for this long is reported stale
WATCH_SECONDS = 1.0  # how often the service checks that the live runs' trainers are there
MAX_CURSOR = 2**63 - 1  # the largest row id SQLite stores
HEALTH_COUNTERS = ("link_reconnects", "link_crc_errors", "link_timeouts", "link_rtt_p50_ms", "link_rtt_p99_ms",
                   "device_seconds", "writes_per_cell", "queries")


class RunSummary(BaseModel):
    id: str
    status: str = Field(description="running, paused, finished, stopped or failed")
    device: str
    identity: str
    seed: int
    started: float = Field(description="Unix time")
    stopped: float | None
    exit_reason: str | None
    heartbeat: float = Field(description="Unix time of the last metric the trainer wrote")


class RunDetail(RunSummary):
    run_dir: str
    config: dict[str, Any]
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


class ErrorDetail(BaseModel):
    detail: str = Field(description="what was wrong and how to fix it")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {401: "no token, or not 'Bearer <token>'", 403: "wrong token", 404: "no such run",
            409: "the run is not running or paused"}
    return {code: {"model": ErrorDetail, "description": text[code]} for code in codes}


class ControlAccepted(BaseModel):
    run_id: str
    action: str
    detail: str


def create_app(runs_dir: Path, token: str | None = None, public_reads: bool = False, *,
               bound: Bound | None = None, heartbeat_timeout: float = DEFAULT_TIMEOUT) -> FastAPI:
    """The service for ``runs_dir``; a token is generated when none is given (``app.state.token``).

    ``bound``: where a server listens with it, so that requests whose ``Host`` names another
    site are refused (None: no check, for an app embedded elsewhere). ``heartbeat_timeout``:
    seconds without a trainer's heartbeat before its run is marked failed.
    """
    store = RunStore.for_runs(runs_dir)
    token = check_token_text(token) if token is not None else secrets.token_urlsafe(16)
    watch = Watch(store, heartbeat_timeout)

    @asynccontextmanager
    async def watching(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_watch_forever(watch))
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(title="hil", version=__version__, lifespan=watching, docs_url=None, redoc_url=None,
                  openapi_url=None, description=(
                      "Watch and steer hardware-in-the-loop training runs. Open without the token: "
                      f"{' and '.join(f'`{p}`' for p in OPEN_PATHS)} (the dashboard page and its script and "
                      "style, which carry no data). Everything else, this document included, needs it: "
                      "`Authorization: Bearer <token>` or `?token=<token>`."))
    app.state.token = token
    app.state.store = store
    app.state.watch = watch
    if bound is not None:
        app.add_middleware(HostCheck, bound=bound)
    shared = SharedReads(SHARED_SECONDS)
    tail = MetricsTail(store, SHARED_SECONDS)

    def check_token(authorization: str | None, query_token: str | None) -> None:
        given = query_token
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value:
                raise HTTPException(401, "Authorization header must be 'Bearer <token>'")
            given = value
        if given is None:
            raise HTTPException(401, "this endpoint needs the service token: send 'Authorization: Bearer <token>' "
                                     "or ?token=<token> (hil serve prints it at start)")
        if not tokens_match(given, token):
            raise HTTPException(403, "wrong token")

    def control_auth(authorization: Annotated[str | None, Header()] = None,
                     token_param: Annotated[str | None, Query(alias="token")] = None) -> None:
        check_token(authorization, token_param)

    def read_auth(authorization: Annotated[str | None, Header()] = None,
                  token_param: Annotated[str | None, Query(alias="token")] = None) -> None:
        if not public_reads:
            check_token(authorization, token_param)

    def run_detail(run_id: str) -> dict[str, Any]:
        try:
            return store.run(run_id)
        except UnknownRun:
            raise HTTPException(404, f"no run {run_id!r} in {runs_dir}") from None

    def known_run(run_id: Annotated[str, PathParam(max_length=200)]) -> dict[str, Any]:
        return shared.get(("run", run_id), lambda: run_detail(run_id))

    reads = [Depends(read_auth)]
    read_errors = _errors(401, 403)
    run_errors = _errors(401, 403, 404)

    @app.get("/api/status", dependencies=reads, responses=read_errors)
    def status() -> ServiceStatus:
        """Service health, runs per status, and the health of every live run's device."""
        return shared.get("status", service_status)

    def service_status() -> ServiceStatus:
        runs = store.runs()
        counts: dict[str, int] = {}
        for run in runs:
            counts[run["status"]] = counts.get(run["status"], 0) + 1
        now = time.time()
        devices = []
        for run in runs:
            if run["status"] in LIVE:
                counters = store.run(run["id"])["counters"]
                age = now - run["heartbeat"]
                devices.append(DeviceHealth(run_id=run["id"], identity=run["identity"], status=run["status"],
                                            healthy=age < HEALTHY_SECONDS or run["status"] == "paused",
                                            seconds_since_heartbeat=age,
                                            counters={k: v for k, v in counters.items() if k in HEALTH_COUNTERS}))
        return ServiceStatus(version=__version__, runs_dir=str(runs_dir), runs_by_status=counts, devices=devices)

    @app.get("/api/runs", dependencies=reads, responses=read_errors)
    def runs() -> list[RunSummary]:
        """Every run in the folder, newest first."""
        return shared.get("runs", lambda: [RunSummary(**r) for r in store.runs()])

    @app.get("/api/runs/{run_id}", dependencies=reads, responses=run_errors)
    def run(detail: Annotated[dict[str, Any], Depends(known_run)]) -> RunDetail:
        """One run: config, status, device identity and latest counters."""
        return RunDetail(**detail)

    @app.get("/api/runs/{run_id}/metrics", dependencies=reads, responses=run_errors)
    def metrics(detail: Annotated[dict[str, Any], Depends(known_run)],
                since: Annotated[int, Query(ge=0, le=MAX_CURSOR, description="return rows with id above this")] = 0,
                limit: Annotated[int, Query(ge=1, le=100000)] = 10000) -> MetricsPage:
        """Metrics rows (loss and queries/s per step; accuracies per epoch) newer than ``since``."""
        rows = tail.page(detail["id"], since, limit)
        return MetricsPage(rows=rows, next=rows[-1].id if rows else since)

    json_error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}}
    stream_errors = {code: {**spec, "content": json_error} for code, spec in run_errors.items()}

    @app.get("/api/runs/{run_id}/events", dependencies=reads, response_class=EventSourceResponse,
             responses=stream_errors)
    async def events(detail: Annotated[dict[str, Any], Depends(known_run)], request: Request,
                     last_event_id: Annotated[int, Header(ge=0, le=MAX_CURSOR)] = 0) -> AsyncIterator[ServerSentEvent]:
        """Server-Sent Events of a run (started, checkpoint, reconnect, paused, finished...), live.

        Resumable: a client that reconnects with ``Last-Event-ID`` gets only newer events. The
        stream ends after the event that ends the run (``failed`` with the reason when the
        service finds its trainer gone).
        """
        after = last_event_id
        run_id = detail["id"]

        def poll() -> tuple[list[Event], str]:  # one store read per run per interval, whatever the clients
            status = store.run(run_id)["status"]  # first: a final status comes after the run's last event
            return store.events(run_id), status

        while True:
            events, status = await asyncio.to_thread(shared.get, ("events", run_id), poll)
            for event in events:
                if event.id > after:
                    after = event.id
                    yield ServerSentEvent(data={"kind": event.kind, "time": event.time, **event.data},
                                          event=event.kind, id=str(event.id))
            if status not in LIVE or await request.is_disconnected():
                return
            await asyncio.sleep(SHARED_SECONDS)

    def control(action: str):  # noqa: ANN202 - a route handler
        def handler(run_id: Annotated[str, PathParam(max_length=200)]) -> ControlAccepted:
            watch.check()  # a trainer that died since the last check is found now
            detail = run_detail(run_id)
            if detail["status"] not in LIVE:
                reason = f" ({detail['exit_reason']})" if detail["exit_reason"] else ""
                raise HTTPException(409, f"run {run_id!r} is {detail['status']}{reason}; only a running or "
                                         "paused run takes controls")
            store.request_control(run_id, action)
            return ControlAccepted(run_id=run_id, action=action,
                                   detail="the trainer acts on it at its next step boundary")
        handler.__doc__ = f"Ask a live run to {action} at its next step boundary (needs the token)."
        return handler

    for action in ("stop", "pause", "resume"):
        app.post(f"/api/runs/{{run_id}}/{action}", status_code=202, dependencies=[Depends(control_auth)],
                 name=f"{action}_run", responses=_errors(401, 403, 404, 409))(control(action))

    registry = CollectorRegistry()
    registry.register(_StoreCollector(store))

    @app.get("/metrics", response_class=Response, dependencies=reads, responses=read_errors)
    def prometheus() -> Response:
        """Prometheus text format: per-run gauges (queries/s, accuracy, loss, link errors, round trips)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", dependencies=reads, include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", dependencies=reads, include_in_schema=False)
    def docs(token_param: Annotated[str | None, Query(alias="token")] = None) -> HTMLResponse:
        query = f"?token={quote(token_param)}" if token_param else ""
        return get_swagger_ui_html(openapi_url=f"/openapi.json{query}", title="hil API")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(files("hil").joinpath("dashboard/index.html").read_text())

    app.mount("/static", StaticFiles(directory=str(files("hil").joinpath("dashboard"))), name="static")
    return app


async def _watch_forever(watch: Watch) -> None:
    """Check the live runs' trainers every :data:`WATCH_SECONDS` until cancelled."""
    while True:
        try:
            await asyncio.to_thread(watch.check)
        except sqlite3.Error as err:  # a busy store: the next check tries again
            log.warning("could not check the live runs: %s", err)
        await asyncio.sleep(WATCH_SECONDS)


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
