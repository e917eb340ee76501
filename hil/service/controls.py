"""Controls: stop, pause and resume a live run; its trainer acts on them at its next step boundary."""

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as PathParam
from pydantic import BaseModel

from hil.service.state import State, control_access, errors, run_detail
from hil.store import LIVE

ACTIONS = ("stop", "pause", "resume")


class ControlAccepted(BaseModel):
    run_id: str
    action: str
    detail: str


def _control(action: str) -> Callable[..., ControlAccepted]:
    def handler(state: State, run_id: Annotated[str, PathParam(max_length=200)]) -> ControlAccepted:
        state.watch.check()  # a trainer that died since the last check is found now
        detail = run_detail(state, run_id)
        if detail["status"] not in LIVE:
            reason = f" ({detail['exit_reason']})" if detail["exit_reason"] else ""
            raise HTTPException(409, f"run {run_id!r} is {detail['status']}{reason}; only a running or "
                                     "paused run takes controls")
        state.store.request_control(run_id, action)
        return ControlAccepted(run_id=run_id, action=action, detail="the trainer acts on it at its next step boundary")
    handler.__doc__ = f"Ask a live run to {action} at its next step boundary (needs the token)."
    return handler


router = APIRouter(dependencies=[Depends(control_access)])
for _action in ACTIONS:
    router.post(f"/api/runs/{{run_id}}/{_action}", status_code=202, name=f"{_action}_run",
                responses=errors(401, 403, 404, 409))(_control(_action))
