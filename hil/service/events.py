"""A run's events as Server-Sent Events, live and resumable."""

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from hil.service.state import MAX_CURSOR, READS, KnownRun, State, errors
from hil.sharing import SHARED_SECONDS
from hil.store import LIVE, Event

router = APIRouter(dependencies=READS)
JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}}


@router.get("/api/runs/{run_id}/events", response_class=EventSourceResponse,
            responses={code: {**spec, "content": JSON_ERROR} for code, spec in errors(401, 403, 404).items()})
async def events(state: State, detail: KnownRun, request: Request,
                 last_event_id: Annotated[int, Header(ge=0, le=MAX_CURSOR)] = 0) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events of a run (started, checkpoint, reconnect, paused, finished...), live.

    Resumable: a client that reconnects with ``Last-Event-ID`` gets only newer events. The
    stream ends after the event that ends the run (``failed`` with the reason when the
    service finds its trainer gone).
    """
    after = last_event_id
    run_id = detail["id"]

    def poll() -> tuple[list[Event], str]:  # one store read per run per interval, whatever the clients
        status = state.store.run(run_id)["status"]  # first: a final status comes after the run's last event
        return state.store.events(run_id), status

    while True:
        events, status = await asyncio.to_thread(state.shared.get, ("events", run_id), poll)
        for event in events:
            if event.id > after:
                after = event.id
                yield ServerSentEvent(data={"kind": event.kind, "time": event.time, **event.data},
                                      event=event.kind, id=str(event.id))
        if status not in LIVE or await request.is_disconnected():
            return
        await asyncio.sleep(SHARED_SECONDS)
