"""``hil node`` refuses devices that do not answer before it starts anything."""

import socket

import ray

from hil.cli import main


def test_a_device_that_does_not_answer_is_refused_before_ray_starts(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    assert main(["node", "--head", "--device", f"socket://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"socket://127.0.0.1:{port}" in err and "does not answer" in err and err.count("\n") == 1
    assert not ray.is_initialized()


def test_a_node_without_devices_is_refused(capsys):
    assert main(["node", "--head"]) == 2
    assert "--device URL" in capsys.readouterr().err
