"""Connecting to Ray: a local instance by default, or a cluster's head at ``--address``."""

import logging
import socket
from types import ModuleType

from hil.config import ConfigError

INSTALL = 'pip install -e ".[cluster]"'
NAMESPACE = "hil"
"""Ray namespace of hil's named actors (device registries, the driver's run store)."""


def require_ray() -> ModuleType:
    """The ``ray`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"this needs Ray, the optional extra hil[cluster]; install it with: {INSTALL}") from None
    return ray


def connect(address: str | None = None, cpus: int | None = None) -> ModuleType:
    """Join the Ray cluster at ``address`` (``auto``: the one ``ray start`` made here), or start a new local one
    with ``cpus`` CPUs (default: all), even where a cluster runs. Returns ``ray``; a second call keeps the first
    connection.

    A local instance's workers inherit this process's environment, so they import the same hil.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address is not None:
        check_listening(address)
    try:
        ray.init(address=address or "local", num_cpus=None if address else cpus, namespace=NAMESPACE,
                 include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING,
                 configure_logging=True)
    except ConnectionError as err:
        raise ConfigError(f"cannot reach a Ray cluster at {address!r} ({err}); start one with `ray start --head` "
                          "(or `hil node --head`), and give the address it prints") from None
    return ray


def check_listening(address: str, timeout: float = 5.0) -> None:
    """Raise a :class:`ConfigError` if nothing listens at a ``host:port`` Ray address.

    Ray itself retries such an address for minutes; ``auto`` and other forms it resolves and
    refuses quickly, so they pass unchecked.
    """
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout).close()
    except OSError as err:
        raise ConfigError(f"--address {address}: no Ray cluster listens there ({err}); start one with "
                          "`ray start --head` (or hil node --head) and give the address it prints") from None
