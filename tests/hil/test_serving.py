"""The service as users run it: `hil serve` and `hil train` in their own processes, over real sockets."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hil.access import allowed_names
from hil.cli import main

TOKEN = "serve-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOT = str(Path(__file__).parents[2])
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}


def _hil(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hil.cli", *args], env=CHILD_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def _wait(predicate, seconds: float) -> float:
    """Seconds until ``predicate()`` held; AssertionError after ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s")


@pytest.fixture
def served(tmp_path) -> Iterator[str]:
    """A `hil serve` process on the test's runs folder; yields its base URL."""
    port = _free_port()
    server = _hil("serve", "--runs", str(tmp_path), "--port", str(port), "--token", TOKEN)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/api/status", headers=AUTH).status_code == 200
        except httpx.TransportError:
            return False

    try:
        _wait(up, 120)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _status(base: str) -> str | None:
    response = httpx.get(f"{base}/api/runs/run", headers=AUTH)
    return response.json()["status"] if response.status_code == 200 else None


def test_a_trainer_killed_with_sigkill_is_failed_its_stream_ends_and_stop_answers_409(tmp_path, served):
    trainer = _hil("train", "--run-dir", str(tmp_path / "run"), "--epochs", "1000", "--hidden", "16",
                   "--no-progress", "--threads", "1")
    try:
        _wait(lambda: _status(served) == "running", 120)
        kinds: list[str] = []

        def follow() -> None:
            with httpx.stream("GET", f"{served}/api/runs/run/events", headers=AUTH, timeout=60) as stream:
                kinds.extend(line[7:] for line in stream.iter_lines() if line.startswith("event: "))

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        time.sleep(1.0)  # the stream is open and live
        assert follower.is_alive()
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        _wait(lambda: _status(served) == "failed", 30)
        follower.join(timeout=30)
        assert not follower.is_alive() and kinds[0] == "started" and kinds[-1] == "failed"
        run = httpx.get(f"{served}/api/runs/run", headers=AUTH).json()
        assert f"process {trainer.pid} on" in run["exit_reason"] and "killed or crashed" in run["exit_reason"]
        stop = httpx.post(f"{served}/api/runs/run/stop", headers=AUTH)
        assert stop.status_code == 409 and "is failed" in stop.json()["detail"]
    finally:
        trainer.kill()
        trainer.wait()


def test_requests_whose_host_names_another_site_are_refused(served):
    port = int(served.rsplit(":", 1)[1])
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
        assert httpx.get(f"{served}/api/status", headers={**AUTH, "Host": host}).status_code == 200, host
    for host in (f"rebind.attacker.example:{port}", f"127.0.0.1:{port + 1}", "localhost", f"127.0.0.2:{port}"):
        for path in ("/", "/api/status"):
            response = httpx.get(f"{served}{path}", headers={**AUTH, "Host": host})
            assert response.status_code == 421, (host, path)
            detail = response.json()["detail"]
            assert repr(host.lower()) in detail and f"http://127.0.0.1:{port}/" in detail and "DNS-rebinding" in detail


def test_a_bind_other_than_loopback_answers_to_its_own_name_and_address():
    assert allowed_names("lab-pc.example", "192.0.2.7") == {"lab-pc.example", "192.0.2.7"}
    assert allowed_names("::1", "::1") == {"localhost", "127.0.0.1", "[::1]"}
    assert allowed_names("0.0.0.0", "0.0.0.0") is None  # any name; the port is still checked


def test_a_busy_port_stops_hil_train_serve_before_any_run_folder_and_hil_serve(tmp_path, capsys):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        code = main(["train", "--serve", "--port", str(port), "--run-dir", str(tmp_path / "r"), "--epochs", "1",
                     "--hidden", "16", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and f"hil: error: port {port} is in use" in err and "choose another with --port" in err
        assert list(tmp_path.iterdir()) == []
        assert main(["serve", "--runs", str(tmp_path), "--port", str(port)]) == 2
        assert f"hil: error: port {port} is in use" in capsys.readouterr().err


def test_hil_train_serve_serves_while_it_trains_and_frees_the_port_after(tmp_path, capsys):
    port = _free_port()
    assert main(["train", "--serve", "--port", str(port), "--run-dir", str(tmp_path / "r"), "--epochs", "1",
                 "--hidden", "16", "--no-progress", "--token", TOKEN]) == 0
    assert f"hil service on http://127.0.0.1:{port}/?token={TOKEN}" in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", port)):  # the service let go of its port
        pass


@pytest.mark.parametrize("args, needle", [
    (["--token", "tök"], "argument --token: the token must be printable ASCII"),
    (["--token", "a b"], "argument --token: the token must be printable ASCII"),
    (["--heartbeat-timeout", "1"], "argument --heartbeat-timeout: at least 6 seconds"),
    (["--heartbeat-timeout", "nan"], "argument --heartbeat-timeout: at least 6 seconds"),
])
def test_hil_serve_refuses_a_bad_token_or_timeout(tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--runs", str(tmp_path), *args])
    assert exit_.value.code == 2 and needle in capsys.readouterr().err
