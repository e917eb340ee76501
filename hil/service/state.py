"""The service's state and the token check, as FastAPI dependencies every router shares."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field

from hil.access import tokens_match
from hil.liveness import Watch
from hil.sharing import MetricsTail, SharedReads
from hil.store import RunStore, UnknownRun

MAX_CURSOR = 2**63 - 1  # the largest row id SQLite stores


@dataclass(frozen=True)
class ServiceState:
    """What the routes of one service share: its runs folder and store, the token, and the shared reads."""

    runs_dir: Path
    store: RunStore
    token: str
    public_reads: bool
    watch: Watch
    shared: SharedReads
    tail: MetricsTail
    registry: CollectorRegistry
    latest: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)
    """Per run: its heartbeat and its latest metrics then (see :func:`hil.service.runs.latest_metrics`)."""


def service_state(request: Request) -> ServiceState:
    """The state of the app serving ``request``."""
    return request.app.state.service


State = Annotated[ServiceState, Depends(service_state)]


def check_token(state: ServiceState, authorization: str | None, query_token: str | None) -> None:
    """Refuse a request without the token (401) or with another one (403)."""
    given = query_token
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise HTTPException(401, "Authorization header must be 'Bearer <token>'")
        given = value
    if given is None:
        raise HTTPException(401, "this endpoint needs the service token: send 'Authorization: Bearer <token>' "
                                 "or ?token=<token> (hil serve prints it at start)")
    if not tokens_match(given, state.token):
        raise HTTPException(403, "wrong token")


def control_access(state: State, authorization: Annotated[str | None, Header()] = None,
                   token_param: Annotated[str | None, Query(alias="token")] = None) -> None:
    """Controls always need the token."""
    check_token(state, authorization, token_param)


def read_access(state: State, authorization: Annotated[str | None, Header()] = None,
                token_param: Annotated[str | None, Query(alias="token")] = None) -> None:
    """Reads need the token unless the service opened them (``public_reads``)."""
    if not state.public_reads:
        check_token(state, authorization, token_param)


def run_detail(state: ServiceState, run_id: str) -> dict[str, Any]:
    """A run's record from the store; 404 for an unknown one."""
    try:
        return state.store.run(run_id)
    except UnknownRun:
        raise HTTPException(404, f"no run {run_id!r} in {state.runs_dir}") from None


def known_run(state: State, run_id: Annotated[str, PathParam(max_length=200)]) -> dict[str, Any]:
    """The run the path names, read once per sharing interval however many clients ask."""
    return state.shared.get(("run", run_id), lambda: run_detail(state, run_id))


KnownRun = Annotated[dict[str, Any], Depends(known_run)]
READS = [Depends(read_access)]


class ErrorDetail(BaseModel):
    detail: str = Field(description="what was wrong and how to fix it")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of the error responses ``codes``."""
    text = {401: "no token, or not 'Bearer <token>'", 403: "wrong token", 404: "no such run",
            409: "the run is not running or paused"}
    return {code: {"model": ErrorDetail, "description": text[code]} for code in codes}
