"""Checkpoints load without unpickling code and carry a checksum: a bad one is refused, never executed."""

import hashlib
import io
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hil.cli import main
from hil.runs import CHECKPOINT, RunFolder, read_checkpoint, seal
from simulators.registry import open_sim

RUN_FLAGS = ["--epochs", "1", "--batch-size", "256", "--no-progress"]


class _Marker:
    """Unpickling this creates a file: what a crafted checkpoint would do to run code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return open, (str(self.path), "w")


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two finished one-epoch runs: ``a`` (hidden 16) and ``b`` (hidden 32)."""
    runs = tmp_path_factory.mktemp("runs")
    for name, hidden in (("a", "16"), ("b", "32")):
        assert main(["train", "--hidden", hidden, *RUN_FLAGS, "--run-dir", str(runs / name)]) == 0
    return runs


def _flip_a_tensor_byte(data: bytes) -> bytes:
    """``data`` with one bit flipped in the middle of its largest stored tensor."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entry = max(archive.infolist(), key=lambda i: i.file_size)
    name_length, extra_length = struct.unpack("<HH", data[entry.header_offset + 26:entry.header_offset + 30])
    at = entry.header_offset + 30 + name_length + extra_length + entry.file_size // 2
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]


def _malicious(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"epoch": 0, "model": _Marker(marker)}, buffer)
    return buffer.getvalue()


def _sealed(payload: bytes) -> bytes:
    """A payload behind a header with its correct SHA-256, as the format documents."""
    return b"hil checkpoint 1 sha256 " + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


CORRUPTIONS = {
    "malicious pickle": lambda data, other, marker: _malicious(marker),
    "malicious pickle with a valid checksum": lambda data, other, marker: _sealed(_malicious(marker)),
    "flipped byte": lambda data, other, marker: _flip_a_tensor_byte(data),
    "truncated": lambda data, other, marker: data[:len(data) // 2],
    "empty": lambda data, other, marker: b"",
    "random bytes": lambda data, other, marker: np.random.default_rng(0).bytes(5000),
    "another network's": lambda data, other, marker: other,
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_bad_checkpoint_is_refused_in_one_line_and_never_executed(finished_runs, tmp_path, capsys, corruption):
    runs = tmp_path / "runs"
    shutil.copytree(finished_runs / "a", runs / "a")
    marker = tmp_path / "marker"
    checkpoint = runs / "a" / CHECKPOINT
    checkpoint.write_bytes(CORRUPTIONS[corruption](checkpoint.read_bytes(), (finished_runs / "b" / CHECKPOINT)
                                                   .read_bytes(), marker))
    before = {p.name: p.read_bytes() for p in (runs / "a").iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--resume", str(runs / "a"), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hil: error:") and "\n" not in err and "checkpoint.pt" in err, err
    assert not marker.exists()
    assert {p.name: p.read_bytes() for p in (runs / "a").iterdir() if p.is_file()} == before
    assert [p.name for p in runs.iterdir()] == ["a"]


def test_a_mismatched_checkpoint_names_the_field(finished_runs, tmp_path, capsys):
    shutil.copytree(finished_runs / "a", tmp_path / "a")
    shutil.copy(finished_runs / "b" / CHECKPOINT, tmp_path / "a" / CHECKPOINT)
    assert main(["train", "--resume", str(tmp_path / "a"), "--epochs", "2", "--no-progress"]) == 2
    assert "'hidden'" in capsys.readouterr().err


def test_a_checkpoint_holds_only_plain_types_and_checks_itself(finished_runs):
    path = finished_runs / "a" / CHECKPOINT
    state = read_checkpoint(path)
    assert state["epoch"] == 1 and all(isinstance(t, torch.Tensor) for t in state["model"]["tensors"])
    header, payload = path.read_bytes().split(b"\n", 1)
    assert header == b"hil checkpoint 1 sha256 " + hashlib.sha256(payload).hexdigest().encode()
    torch.load(io.BytesIO(payload), weights_only=True)


@pytest.mark.parametrize("url", ["sim://crossbar?preset=pcm&layers=8,6,4&seed=1",
                                 "sim://photonic?preset=silicon&layers=6,6,4&seed=1"])
def test_a_noisy_simulators_state_survives_a_safe_checkpoint(tmp_path, url):
    device = open_sim(url)
    params = [{spec.params[k].name: torch.rand(spec.params[k].shape) * 0.5 for k in range(len(spec.params))}
              for spec in device.info().layers]
    x = torch.rand(5, 8 if "crossbar" in url else 6)
    device.forward(params, x)
    device.wait(10.0)
    run = RunFolder(tmp_path)
    run.save_checkpoint({"device": device.state_dict()})
    again = open_sim(url)
    again.load_state_dict(read_checkpoint(tmp_path / CHECKPOINT)["device"])
    for a, b in zip(device.forward(params, x), again.forward(params, x)):
        assert torch.equal(a, b)
    assert device.counters.as_dict() == again.counters.as_dict()


def test_a_run_folder_from_before_rule_options_resumes(tmp_path):
    """Its config.yaml and checkpoint hold mf-dd's options at the top level; both load, moved into the section."""
    run = tmp_path / "run"
    assert main(["train", "--hidden", "16", "--epochs", "1", "--threads", "1", "--no-progress",
                 "--run-dir", str(run)]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    config.update(config.pop("rule_options"))
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    state = read_checkpoint(run / CHECKPOINT)
    state["run_fields"].update(state["run_fields"].pop("rule_options"))
    (run / CHECKPOINT).write_bytes(seal(state))
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert read_checkpoint(run / CHECKPOINT)["epoch"] == 2
