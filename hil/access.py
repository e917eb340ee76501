"""Who may reach the service: the token, the paths open without it, and the ``Host`` check.

Open without the token: :data:`OPEN_PATHS`, the dashboard page and its script and style, which
carry no data (the page asks the API for everything, with the token). Everything else needs the
token: the JSON API, the event streams, Prometheus ``/metrics``, and the API's documentation
(``/docs``, ``/openapi.json``); ``public_reads`` opens the reads (and the documentation), never
the controls.

The ``Host`` check stops DNS rebinding: a web page on another site whose name an attacker
points at 127.0.0.1 would otherwise reach a loopback service from the user's browser.
Starlette's ``TrustedHostMiddleware`` compares names only and answers a bare 400; this one also
compares the port and says which address to use.
"""

import ipaddress
import secrets
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = ("/", "/static")
"""Routes that answer without the token (``/static`` is a folder: everything under it)."""
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True)
class Bound:
    """Where a server listens: the host it was asked for, the address it bound and its port."""

    host: str
    address: str
    port: int


def check_token_text(token: str) -> str:
    """The token itself if it can travel in an HTTP header; ValueError saying why not otherwise."""
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        raise ValueError(f"the token must be printable ASCII without spaces (it travels in HTTP headers), "
                         f"got {token!r}")
    return token


def tokens_match(given: str, token: str) -> bool:
    """Compare in constant time; as bytes, since ``compare_digest`` refuses non-ASCII text."""
    return secrets.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode())


def allowed_names(host: str, bound: str) -> set[str] | None:
    """The host names in a ``Host`` header that name a service bound to ``bound`` (asked for as ``host``).

    A loopback bind answers to ``localhost``, ``127.0.0.1`` and ``[::1]``; any other to the name
    it was asked for and its address. None for a wildcard bind (0.0.0.0, ::), which any name may
    reach: there only the port is checked.
    """
    address = ipaddress.ip_address(bound.split("%")[0])
    if address.is_unspecified:
        return None
    return set(LOOPBACK_NAMES) if address.is_loopback else {_bracketed(host.lower()), _bracketed(bound.lower())}


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _split(host_header: str) -> tuple[str, str]:
    """``name:port`` (``[v6]:port``) into name and port; port 80 when it names none."""
    name, close, rest = host_header.rpartition("]")
    if close:
        return name + close, rest[1:] if rest.startswith(":") else "80"
    name, colon, port = host_header.rpartition(":")
    return (name, port) if colon else (host_header, "80")


class HostCheck:
    """ASGI middleware: answer 421 to a request whose ``Host`` does not name this service."""

    def __init__(self, app: ASGIApp, bound: Bound) -> None:
        self.app = app
        self.names = allowed_names(bound.host, bound.address)
        self.port = str(bound.port)
        self.url = f"http://{_bracketed(bound.host)}:{bound.port}/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            name, port = _split(given)
            if port != self.port or (self.names is not None and name not in self.names):
                detail = (f"the Host header {given!r} does not name this service; open it as {self.url} "
                          "(a page under another name may be a DNS-rebinding attack)")
                await JSONResponse({"detail": detail}, status_code=421)(scope, receive, send)
                return
        await self.app(scope, receive, send)
