"""The status service: a FastAPI app over a runs folder's store, the dashboard, Prometheus metrics.

Everything but the dashboard page and its static files needs the token (:mod:`hil.access`)
unless reads are opened (``public_reads``); the token goes in ``Authorization: Bearer <token>``
or, for the browser's EventSource, a ``token`` query parameter. Controls are written to the store
and the running trainer acts on them at its next step boundary. The service watches the live
runs' trainers (:mod:`hil.liveness`) and marks a run whose trainer is gone ``failed``.

One router per concern (:mod:`.runs`, :mod:`.events`, :mod:`.controls`, :mod:`.metrics`,
:mod:`.dashboard`); the state they share and the token check are dependencies (:mod:`.state`).
"""

import asyncio
import logging
import secrets
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from hil import __version__
from hil.access import OPEN_PATHS, Bound, HostCheck, check_token_text
from hil.liveness import DEFAULT_TIMEOUT, Watch
from hil.service import controls, dashboard, events, metrics, runs
from hil.service.state import MAX_CURSOR, ServiceState
from hil.sharing import SHARED_SECONDS, MetricsTail, SharedReads
from hil.store import RunStore

__all__ = ["MAX_CURSOR", "create_app"]

log = logging.getLogger(__name__)

WATCH_SECONDS = 1.0  # how often the service checks that the live runs' trainers are there


def create_app(runs_dir: Path, token: str | None = None, public_reads: bool = False, *,
               bound: Bound | None = None, heartbeat_timeout: float = DEFAULT_TIMEOUT) -> FastAPI:
    """The service for ``runs_dir``; a token is generated when none is given (``app.state.token``).

    ``bound``: where a server listens with it, so that requests whose ``Host`` names another
    site are refused (None: no check, for an app embedded elsewhere). ``heartbeat_timeout``:
    seconds without a trainer's heartbeat before its run is marked failed.
    """
    store = RunStore.for_runs(runs_dir)
    token = check_token_text(token) if token is not None else secrets.token_urlsafe(16)
    state = ServiceState(runs_dir=runs_dir, store=store, token=token, public_reads=public_reads,
                         watch=Watch(store, heartbeat_timeout), shared=SharedReads(SHARED_SECONDS),
                         tail=MetricsTail(store, SHARED_SECONDS), registry=metrics.store_registry(store))

    @asynccontextmanager
    async def watching(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_watch_forever(state.watch))
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
    app.state.service = state  # what the routes' dependencies read (hil.service.state)
    app.state.token = token
    app.state.store = store
    if bound is not None:
        app.add_middleware(HostCheck, bound=bound)
    for router in (runs.router, events.router, controls.router, metrics.router, dashboard.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(dashboard.DASHBOARD)), name="static")
    return app


async def _watch_forever(watch: Watch) -> None:
    """Check the live runs' trainers every :data:`WATCH_SECONDS` until cancelled."""
    while True:
        try:
            await asyncio.to_thread(watch.check)
        except sqlite3.Error as err:  # a busy store: the next check tries again
            log.warning("could not check the live runs: %s", err)
        await asyncio.sleep(WATCH_SECONDS)
