"""Run the status service with uvicorn: on its own (``hil serve``) or beside a trainer (``--serve``)."""

import sys
import threading
from pathlib import Path

import uvicorn

from hil.service import create_app


def _announce(app_token: str, host: str, port: int) -> None:
    print(f"hil service on http://{host}:{port}/?token={app_token}  (token: {app_token})", file=sys.stderr, flush=True)


def serve_forever(runs_dir: Path, host: str, port: int, token: str | None, public_reads: bool = False) -> None:
    """Serve until Ctrl-C."""
    app = create_app(runs_dir, token, public_reads)
    _announce(app.state.token, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def serve_in_thread(runs_dir: Path, host: str, port: int, token: str | None) -> uvicorn.Server:
    """Start the service on a daemon thread (it ends with the process); returns the server."""
    app = create_app(runs_dir, token)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    threading.Thread(target=server.run, name="hil-service", daemon=True).start()
    _announce(app.state.token, host, port)
    return server
