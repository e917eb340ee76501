"""The service learns that a trainer is gone: real processes, killed by real signals, watched by the
app (its lifespan runs the watch) over the same SQLite file."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hil.liveness import MIN_TIMEOUT, Watch
from hil.service import create_app
from hil.store import RunStore

TOKEN = "live-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOT = str(Path(__file__).parents[2])
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}

# A trainer's heartbeat from a process that says it runs on another machine, so only the heartbeat
# tells the service that it is there (a process id means nothing across hosts).
ELSEWHERE = """
import socket, sys, time
from pathlib import Path
socket.gethostname = lambda: "another-host"
from hil.liveness import Heartbeat
from hil.store import RunStore
store = RunStore.for_runs(Path(sys.argv[1]))
store.start_run("remote", Path("remote"), {}, "sim://crossbar", "chip", 0)
Heartbeat(store, "remote", interval=0.5).start()
print("beating", flush=True)
time.sleep(600)
"""


def _wait(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s")


def test_a_trainer_on_another_host_is_marked_failed_when_its_heartbeat_stops(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", ELSEWHERE, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env=CHILD_ENV)
    try:
        assert child.stdout.readline() == "beating\n"
        with TestClient(create_app(tmp_path, TOKEN, heartbeat_timeout=MIN_TIMEOUT)) as client:
            def status():
                return client.get("/api/runs/remote", headers=AUTH).json()["status"]

            time.sleep(MIN_TIMEOUT + 3)  # longer than the timeout: a beating trainer stays running
            assert status() == "running"
            child.send_signal(signal.SIGTERM)
            child.wait()
            _wait(lambda: status() == "failed", MIN_TIMEOUT * 5)
            run = client.get("/api/runs/remote", headers=AUTH).json()
            assert "no heartbeat from the training process" in run["exit_reason"]
            assert "on another-host" in run["exit_reason"]
            events = client.get("/api/runs/remote/events", headers=AUTH).text  # ends: the run is over
            assert "event: failed" in events and "no heartbeat" in events
            stop = client.post("/api/runs/remote/stop", headers=AUTH)
            assert stop.status_code == 409 and "is failed (no heartbeat" in stop.json()["detail"]
    finally:
        child.kill()
        child.wait()


def test_a_run_whose_process_is_gone_on_this_host_is_failed_at_the_next_check(tmp_path):
    store = RunStore.for_runs(tmp_path)
    watch = Watch(store)
    store.start_run("alive", tmp_path / "alive", {}, "d", "i", 0)  # this process: alive, not beating yet
    crash = (f"from pathlib import Path; from hil.store import RunStore; "
             f"RunStore.for_runs(Path({str(tmp_path)!r})).start_run('gone', Path('gone'), {{}}, 'd', 'i', 0)")
    gone = subprocess.run([sys.executable, "-c", crash], check=True,
                          env=CHILD_ENV)
    assert gone.returncode == 0 and store.run("gone")["status"] == "running"
    assert watch.check() == ["gone"] and watch.check() == []
    assert store.run("gone")["status"] == "failed" and store.run("alive")["status"] == "running"
    assert "killed or crashed" in store.run("gone")["exit_reason"]
    assert [(e.kind, e.data["reason"]) for e in store.events("gone")] == [("failed", store.run("gone")["exit_reason"])]


def test_the_timeout_is_bounded_below(tmp_path):
    with pytest.raises(ValueError, match=f"at least {MIN_TIMEOUT:g} s"):
        Watch(RunStore.for_runs(tmp_path), timeout=1.0)
