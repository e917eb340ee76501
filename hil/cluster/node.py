"""``hil node``: a Ray node that offers this machine's bench devices to sweeps."""

import json
import shutil
import subprocess

from hil.cluster.devices import device_kind, node_resources, register_devices
from hil.cluster.engine import connect, require_ray
from hil.config import ConfigError


def start_node(urls: list[str], head: bool, address: str | None, port: int = 6379, cpus: int | None = None
               ) -> dict[str, str]:
    """Start a Ray node here (the head of a new cluster, or joining ``address``) with one unit of
    ``hil_device_<kind>`` per device, and its device registry. Returns each URL's kind.

    Every device is opened first, so one that does not answer is refused before anything starts.
    """
    require_ray()
    kinds = {url: device_kind(url) for url in urls}
    ray_cli = shutil.which("ray")
    if ray_cli is None:
        raise ConfigError("the ray command is not on PATH; install the extra: pip install -e \".[cluster]\"")
    command = [ray_cli, "start", f"--resources={json.dumps(node_resources(kinds))}"]
    command += ["--head", f"--port={port}", "--include-dashboard=false"] if head else [f"--address={address}"]
    if cpus is not None:
        command.append(f"--num-cpus={cpus}")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ConfigError(f"ray start failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    ray = connect("auto")  # the cluster of the node just started here, as this node
    register_devices(urls, ray.get_runtime_context().get_node_id(), kinds)
    return kinds
