"""Sweeps on a two-node Ray cluster (ray.cluster_utils.Cluster), one emulated bench device per node.

Each device is a real ``hil emulate`` process on a TCP port; each node offers it as one unit of
``hil_device_crossbar`` and runs its registry, as ``hil node`` sets up.
"""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
import torch
import yaml
from ray.cluster_utils import Cluster

import hil
from hil.cluster.devices import NAMESPACE, register_devices, registry_name, resource_name
from hil.cluster.sweep import sweep
from hil.runs import RunFolder
from hil.store import RunStore

BASE = {"hidden": [16], "batch_size": 64, "epochs": 2}


def emulate() -> tuple[subprocess.Popen, str]:
    """A ``hil emulate`` process on a free TCP port, and its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "emulate", "--tcp", "0", "--layers", "64,16"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, proc.stdout.readline().strip()


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    emulators = [emulate() for _ in range(2)]
    nodes = [cluster.add_node(num_cpus=1, resources={resource_name("crossbar"): 1}) for _ in emulators]
    ray.init(address=cluster.address, namespace=NAMESPACE)
    for node, (_, url) in zip(nodes, emulators):
        register_devices([url], node.node_id)
    yield cluster, [url for _, url in emulators], emulators
    ray.shutdown()
    cluster.shutdown()
    for proc, _ in emulators:
        proc.kill()
        proc.wait()


def write_sweep(path: Path, **extra) -> Path:
    spec = {"base": {**BASE, **extra.pop("base", {})}, "space": {"lr": {"grid": [0.003, 0.01]}, "seed": {"seeds": 2}},
            "device": "crossbar", **extra}
    path.write_text(yaml.safe_dump(spec))
    return path


def final_tensors(run_dir: Path) -> list[torch.Tensor]:
    return RunFolder(run_dir).load_checkpoint()["model"]["tensors"]


def test_four_trials_over_two_devices_never_share_one_and_train_as_alone(cluster, tmp_path):
    _, urls, _ = cluster
    out = tmp_path / "sweep"
    sweep(write_sweep(tmp_path / "sweep.yaml"), out, address="auto")
    runs = RunStore.for_runs(out / "runs").runs()
    assert len(runs) == 4 and {r["status"] for r in runs} == {"finished"}
    assert {r["device"] for r in runs} == set(urls)  # both nodes' devices were used
    for a in runs:
        for b in runs:
            if a["id"] < b["id"] and a["device"] == b["device"]:
                assert a["stopped"] <= b["started"] or b["stopped"] <= a["started"], (a, b)
    for run in runs:  # each trial's parameters equal the same config trained alone (same seed, same device kind)
        config = run["config"]
        alone = tmp_path / f"alone-{run['id']}"
        hil.train(**{**BASE, "lr": config["lr"], "seed": config["seed"], "threads": 1, "device": urls[0],
                     "run_dir": alone}, progress=False)
        for mine, theirs in zip(final_tensors(Path(run["run_dir"])), final_tensors(alone)):
            assert torch.equal(mine, theirs)
    results = (out / "results.md").read_text()
    assert results.count("| finished |") == 4
    assert yaml.safe_load((out / "best.yaml").read_text())["lr"] in (0.003, 0.01)


def test_a_device_that_dies_fails_its_trial_which_retries_on_the_other_and_is_not_leased_again(cluster, tmp_path):
    _, urls, emulators = cluster
    out = tmp_path / "sweep"
    # retries: 2, as a retry that Ray sends to the dead device's node before the registry holds its unit
    # waits there for a live device in vain (lease_device), fails, and goes again
    spec = write_sweep(tmp_path / "sweep.yaml", base={"epochs": 6}, retries=2,
                       space={"lr": {"grid": [0.01]}, "seed": {"seeds": 2}})
    store_path = out / "runs"
    killed_at = {}

    def kill_second_device_mid_run() -> None:
        while not killed_at:
            if store_path.joinpath("hil.sqlite").exists():
                store = RunStore.for_runs(store_path)
                on_it = [r for r in store.runs() if r["device"] == urls[1]]
                if on_it and any(m.name == "val_loss" for m in store.metrics(on_it[0]["id"])):
                    emulators[1][0].kill()
                    killed_at["time"] = time.time()
                    killed_at["run"] = on_it[0]["id"]
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_second_device_mid_run, daemon=True)
    watcher.start()
    sweep(spec, out, address="auto")
    watcher.join(timeout=1)
    assert killed_at, "the second device never trained a trial"
    store = RunStore.for_runs(store_path)
    runs = {r["id"]: r for r in store.runs()}
    assert {r["status"] for r in runs.values()} == {"finished"}  # the killed trial was retried and finished
    kinds = [e.kind for e in store.events(killed_at["run"])]
    assert "failed" in kinds and kinds[-1] == "finished"
    assert runs[killed_at["run"]]["device"] == urls[0]  # its retry ran on the live device
    states = [ray.get(ray.get_actor(registry_name(n["NodeID"]), namespace=NAMESPACE).state.remote())
              for n in ray.nodes() if n["Alive"] and n["Resources"].get(resource_name("crossbar"))]
    assert [s["gone"] for s in states if urls[1] in s["kinds"]] == [[urls[1]]]
    for event_run in runs.values():  # nothing started on the dead device after it died
        if event_run["device"] == urls[1]:
            assert event_run["started"] < killed_at["time"]
