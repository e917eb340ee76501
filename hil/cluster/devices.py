"""Bench devices as Ray resources: each node declares its devices, and a trial leases one URL at a time.

A node with bench devices attached (``hil node --device URL ...``) offers one unit of the custom
resource ``hil_device_<kind>`` per device (kind: ``crossbar`` or ``photonic``, read from the device),
and runs a :class:`Registry` actor that knows which URLs it holds. A trial that needs a device asks Ray
for one unit, so it lands on a node with a free one, then leases a URL from that node's registry
(:func:`lease_device`); the lease ends with the trial, or is taken back once the trial's process is gone.
Two trials never hold one URL.

A device that does not answer when its lease ends (its link died, the emulator was killed) is marked
gone: it is not leased again, and a :func:`hold` task keeps its resource unit, so no trial is sent to
the node for it, until the device answers again.
"""

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from devices.errors import DeviceError
from devices.registry import open_device
from hil.cluster.engine import NAMESPACE, require_ray
from hil.config import ConfigError
from hil.store import pid_alive

log = logging.getLogger(__name__)

RESOURCE_PREFIX = "hil_device_"
PROBE_SECONDS = 2.0
"""How often a gone device is tried again."""
LEASE_WAIT_SECONDS = 60.0
"""How long a trial waits for its node's registry to have a live, free device before it fails."""


def resource_name(kind: str) -> str:
    """The Ray resource that counts a node's free bench devices of ``kind``."""
    return f"{RESOURCE_PREFIX}{kind}"


def registry_name(node_id: str) -> str:
    return f"devices-{node_id}"


def device_kind(url: str) -> str:
    """Open a device to see that it answers, and name its kind: ``photonic`` for meshes, else ``crossbar``."""
    try:
        with open_device(url) as device:
            layers = device.info().layers
    except DeviceError as err:
        raise ConfigError(f"device {url!r} does not answer ({err}); attach it, or leave it out") from None
    return "photonic" if any(layer.kind == "mesh" for layer in layers) else "crossbar"


def answers(url: str) -> bool:
    """Whether the device at ``url`` can be opened and tells what it is."""
    try:
        with open_device(url) as device:
            device.info()
    except (DeviceError, OSError):
        return False
    return True


class Registry:
    """The bench devices of one node: which are free, leased (to which process), or gone (a Ray actor)."""

    def __init__(self, node_id: str, kinds: dict[str, str]) -> None:
        self.node_id = node_id
        self.kinds = kinds
        """Each URL's kind."""
        self.leases: dict[str, tuple[int, str]] = {}
        """URL -> (process id, trial) holding it."""
        self.gone: dict[str, Any] = {}
        """URL -> the :func:`hold` task keeping its unit while it does not answer."""

    def acquire(self, kind: str, pid: int, trial: str) -> str | None:
        """Lease a live, free device of ``kind`` to process ``pid`` (on this node) for ``trial``; None if none."""
        self._reclaim()
        for url, of_kind in self.kinds.items():
            if of_kind == kind and url not in self.leases and url not in self.gone:
                self.leases[url] = (pid, trial)
                return url
        return None

    def release(self, url: str) -> bool:
        """End a lease; a device that no longer answers is marked gone (and its unit held). Returns it answers."""
        self.leases.pop(url, None)
        if answers(url):
            return True
        self._hold(url)
        return False

    def back(self, url: str) -> None:
        """A gone device answers again (called by its :func:`hold` task as it ends)."""
        self.gone.pop(url, None)
        log.warning("bench device %s answers again; it is leased again", url)

    def state(self) -> dict[str, Any]:
        """What the registry knows: kinds, leases and gone devices."""
        return {"node": self.node_id, "kinds": self.kinds, "leases": {u: list(v) for u, v in self.leases.items()},
                "gone": sorted(self.gone)}

    def _reclaim(self) -> None:
        """Take back leases whose process is gone (a trial killed without releasing); check their devices."""
        for url, (pid, _) in list(self.leases.items()):
            if not pid_alive(pid):
                self.release(url)

    def _hold(self, url: str) -> None:
        ray = require_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        log.warning("bench device %s does not answer; it is not leased until it does", url)
        here = NodeAffinitySchedulingStrategy(self.node_id, soft=False)
        me = ray.get_runtime_context().current_actor
        self.gone[url] = ray.remote(hold).options(num_cpus=0, resources={resource_name(self.kinds[url]): 1},
                                                  scheduling_strategy=here).remote(url, me)


def hold(url: str, registry: Any) -> None:
    """Keep one resource unit of a gone device's node until the device answers, then hand it back."""
    while not answers(url):
        time.sleep(PROBE_SECONDS)
    require_ray().get(registry.back.remote(url))


def register_devices(urls: list[str], node_id: str | None = None, kinds: dict[str, str] | None = None
                     ) -> dict[str, str]:
    """Start the registry of ``urls`` on a node (default: this process's), replacing an earlier one.

    Returns each URL's kind (``kinds``, else read from the devices). The node must offer one unit of
    :func:`resource_name` per device of each kind (``hil node`` starts it so: :func:`node_resources`).
    """
    ray = require_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = node_id or ray.get_runtime_context().get_node_id()
    kinds = kinds or {url: device_kind(url) for url in urls}
    name = registry_name(node_id)
    try:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))
    except ValueError:
        pass
    registry = ray.remote(Registry).options(
        name=name, namespace=NAMESPACE, lifetime="detached", num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(node_id, kinds)
    ray.get(registry.state.remote())
    return kinds


def node_resources(kinds: dict[str, str]) -> dict[str, float]:
    """The custom resources of a node with these devices: one unit per device, by kind."""
    counts: dict[str, float] = {}
    for kind in kinds.values():
        counts[resource_name(kind)] = counts.get(resource_name(kind), 0) + 1
    return counts


@contextmanager
def lease_device(kind: str, trial: str, wait: float = LEASE_WAIT_SECONDS) -> Iterator[str]:
    """A bench device of ``kind`` from this node's registry, for the ``with`` block (a trial's whole run)."""
    ray = require_ray()
    node = ray.get_runtime_context().get_node_id()
    try:
        registry = ray.get_actor(registry_name(node), namespace=NAMESPACE)
    except ValueError:
        raise DeviceError(f"node {node} offers {resource_name(kind)} but runs no device registry; start it with "
                          "hil node --device URL ...") from None
    deadline = time.monotonic() + wait
    while (url := ray.get(registry.acquire.remote(kind, os.getpid(), trial))) is None:
        if time.monotonic() > deadline:
            raise DeviceError(f"no live {kind} device was free on node {node} for {wait:g} s")
        time.sleep(0.5)
    try:
        yield url
    finally:
        ray.get(registry.release.remote(url))
