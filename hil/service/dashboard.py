"""The pages: the dashboard (open without the token) and the API's documentation (a read)."""

from importlib.resources import files
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from hil.service.state import READS

DASHBOARD = files("hil").joinpath("dashboard")
"""The dashboard's page, script and style, and uPlot under ``vendor/``; served at ``/`` and under ``/static``."""

router = APIRouter()


@router.get("/openapi.json", dependencies=READS, include_in_schema=False)
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", dependencies=READS, include_in_schema=False)
def docs(token_param: Annotated[str | None, Query(alias="token")] = None) -> HTMLResponse:
    query = f"?token={quote(token_param)}" if token_param else ""
    return get_swagger_ui_html(openapi_url=f"/openapi.json{query}", title="hil API")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard() -> HTMLResponse:
    return HTMLResponse(DASHBOARD.joinpath("index.html").read_text())
