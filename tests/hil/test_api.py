"""``import hil`` in a notebook: hil.train on arrays, npz files on the command line, devices closed on every path."""

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

import hil
from devices import registry
from hil.cli import main
from simulators.registry import open_sim

SMALL = {"hidden": [16], "epochs": 1, "threads": 1, "progress": False}


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    """A small slice of scikit-learn's digits as the four arrays."""
    bunch = load_digits()
    x = (bunch.data / 16).astype(np.float32)
    return {"x_train": x[:300], "y_train": bunch.target[:300], "x_test": x[300:400], "y_test": bunch.target[300:400]}


def test_train_on_arrays_writes_the_run_folder_and_resumes_only_on_the_same_arrays(tmp_path, digits, capsys):
    data = hil.data.from_arrays(**digits)
    summary = hil.train(hil.TrainConfig(seed=2), dataset=data, run_dir=tmp_path / "run", **SMALL)
    assert summary["status"] == "finished" and summary["dataset"] == data.name and summary["epochs"] == 1
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary
    assert hil.load_config(tmp_path / "run" / "config.yaml").dataset == data.name

    assert hil.train(dataset=data, resume=tmp_path / "run", epochs=2, progress=False)["epochs"] == 2
    other = hil.data.from_arrays(**{**digits, "y_test": digits["y_test"][::-1].copy()})
    with pytest.raises(hil.ConfigError, match="config field 'dataset'"):
        hil.train(dataset=other, resume=tmp_path / "run", epochs=3, progress=False)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "3"]) == 2
    assert "arrays given in Python, which only Python has; continue the run there" in capsys.readouterr().err


def test_cli_trains_on_an_npz_file(tmp_path, digits, capsys):
    np.savez(tmp_path / "digits.npz", **digits)
    argv = ["train", "--dataset", f"npz:{tmp_path / 'digits.npz'}", "--hidden", "16", "--epochs", "1",
            "--threads", "1", "--no-progress", "--json", "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["status"] == "finished" and summary["dataset"] == f"npz:{tmp_path / 'digits.npz'}"


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"not an archive", "is not a numpy .npz archive"),
    ({"x_train": np.zeros((4, 64))}, "has no y_train, x_test, y_test"),
    ({"x_train": np.full((4, 64), np.nan), "y_train": np.arange(4), "x_test": np.zeros((2, 64)),
      "y_test": np.arange(2)}, "x_train: sample 0 has pixels that are not finite"),
])
def test_a_bad_npz_file_is_one_error_line_and_no_run_folder(tmp_path, capsys, content, message):
    path = tmp_path / "data.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.savez(path, **content)
    assert main(["train", "--dataset", f"npz:{path}", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hil: error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


class Closings:
    """A ``closing://`` scheme: the simulated crossbar of the URL's query, counting its closes."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, url: str) -> registry.Device:
        device = open_sim("sim://crossbar?" + url.partition("?")[2])
        device.close = self.closed  # type: ignore[method-assign]
        return device

    def closed(self) -> None:
        self.count += 1


@pytest.fixture
def closings(monkeypatch) -> Closings:
    opener = Closings()
    monkeypatch.setitem(registry._openers, "closing", opener)
    return opener


def test_open_device_is_the_cli_opener_and_closes_as_a_context(closings):
    with hil.open_device("closing://?layers=4,3") as device:
        assert device.info().layers[0].inputs == 4
    assert closings.count == 1


def test_the_trainer_closes_its_device_after_a_run_and_after_a_refused_start(tmp_path, digits, closings):
    data = hil.data.from_arrays(**digits)
    hil.train(dataset=data, device="closing://?layers=64,16", run_dir=tmp_path / "ok", **SMALL)
    assert closings.count == 1
    with pytest.raises(hil.DatasetError, match="takes 8 inputs"):
        hil.train(dataset=data, device="closing://?layers=8,16", run_dir=tmp_path / "refused", **SMALL)
    assert closings.count == 2 and not (tmp_path / "refused").exists()

