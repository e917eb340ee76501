"""Run the status service with uvicorn: on its own (``hil serve``) or beside a trainer (``--serve``).

The listening socket is bound first (:func:`listen`), so a busy port is an error before anything
else starts, and the app knows the address it serves for its ``Host`` check.
"""

import errno
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from hil.access import Bound
from hil.config import ConfigError
from hil.liveness import DEFAULT_TIMEOUT
from hil.service import create_app

GRACE_SECONDS = 2.0
"""On shutdown, how long open event streams of runs still live may go on before they are cut."""


def listen(host: str, port: int) -> tuple[socket.socket, Bound]:
    """A socket listening on ``host:port`` and where it is bound; ConfigError if it cannot bind."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        sock = socket.create_server((host, port), family=family)
    except socket.gaierror as err:
        raise ConfigError(f"cannot serve on {host!r}: {err.strerror}; give an address of this machine with "
                          "--host, e.g. 127.0.0.1") from None
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} is in use on {host} (another hil serve, or another program); "
                              "choose another with --port") from None
        raise ConfigError(f"cannot serve on {host}:{port}: {err.strerror}; choose another --host or --port") from None
    address, bound_port = sock.getsockname()[:2]
    return sock, Bound(host, address, bound_port)


def _announce(app_token: str, bound: Bound) -> None:
    where = f"[{bound.host}]" if ":" in bound.host else bound.host
    print(f"hil service on http://{where}:{bound.port}/?token={app_token}  (token: {app_token})",
          file=sys.stderr, flush=True)


def _server(runs_dir: Path, bound: Bound, token: str | None, public_reads: bool,
            heartbeat_timeout: float) -> uvicorn.Server:
    app = create_app(runs_dir, token, public_reads, bound=bound, heartbeat_timeout=heartbeat_timeout)
    _announce(app.state.token, bound)
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=GRACE_SECONDS))


def serve_forever(runs_dir: Path, listener: tuple[socket.socket, Bound], token: str | None,
                  public_reads: bool = False, heartbeat_timeout: float = DEFAULT_TIMEOUT) -> None:
    """Serve on ``listener`` (from :func:`listen`) until Ctrl-C."""
    sock, bound = listener
    _server(runs_dir, bound, token, public_reads, heartbeat_timeout).run(sockets=[sock])


@contextmanager
def serve_in_thread(runs_dir: Path, listener: tuple[socket.socket, Bound],
                    token: str | None) -> Iterator[uvicorn.Server]:
    """Serve on ``listener`` (from :func:`listen`) from a thread while the ``with`` block runs."""
    sock, bound = listener
    server = _server(runs_dir, bound, token, False, DEFAULT_TIMEOUT)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="hil-service", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=GRACE_SECONDS + 10)
