"""Every bad input to ``hil train`` ends in one line naming the field or file and the fix, exit 2, and
leaves no run folder behind: config files, config values, devices too big for memory, broken datasets."""

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import hil.resources
import simulators.options
from hil.cli import main

GIB = 1 << 30
IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">f4"): 0x0D}


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def _mnist(folder: Path, train_images: np.ndarray | None = None, train_labels: np.ndarray | None = None,
           gz: bytes | None = None) -> Path:
    """A small MNIST folder (4x4 images); ``gz`` replaces the training labels with these bytes as ``.gz``."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 4, 4), dtype=np.uint8) if train_images is None else train_images
    labels = (np.arange(len(images)) % 10).astype(np.uint8) if train_labels is None else train_labels
    (folder / "train-images-idx3-ubyte").write_bytes(_idx(images))
    if gz is None:
        (folder / "train-labels-idx1-ubyte").write_bytes(_idx(labels))
    else:
        (folder / "train-labels-idx1-ubyte.gz").write_bytes(gz)
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 256, (20, 4, 4), dtype=np.uint8)))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx((np.arange(20) % 10).astype(np.uint8)))
    return folder


def _data(**kwargs: object) -> Callable[[Path], list[str]]:
    return lambda tmp: ["--dataset", "mnist", "--data-dir", str(_mnist(tmp / "data", **kwargs))]  # type: ignore[arg-type]


def _labels(values: list[int], dtype: type = np.uint8) -> np.ndarray:
    return np.resize(np.array(values, dtype=dtype), 40)


def _nan_images() -> np.ndarray:
    images = np.full((40, 4, 4), 0.5, dtype=">f4")
    images[3, 1, 2] = np.nan
    return images


def _config_file(content: bytes) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "c.yaml").write_bytes(content)
        return [str(tmp / "c.yaml")]
    return setup


def _folder(tmp: Path) -> list[str]:
    (tmp / "configs").mkdir()
    return [str(tmp / "configs")]


def _flags(*argv: str) -> Callable[[Path], list[str]]:
    return lambda tmp: list(argv)


GZ = gzip.compress(_idx((np.arange(40) % 10).astype(np.uint8)))

CASES = {
    "non-UTF-8 YAML": (_config_file(b"epochs: 2\nrule: mf-dd  # caf\xe9\n"), "UTF-8"),
    "config path is a folder": (_folder, "is a folder"),
    "torch_device garbage": (_flags("--torch-device", "banana"), "'torch_device'"),
    "torch_device of another kind": (_flags("--torch-device", "meta"), "'torch_device'"),
    "cuda without a GPU": (_flags("--torch-device", "cuda"), "no CUDA GPU"),
    "crossbar too big for memory": (_flags("--device", "sim://crossbar?layers=64,99999999"), "GB"),
    "noisy crossbar too big for memory": (_flags("--device", "sim://crossbar?preset=pcm&layers=64,99999999"), "GB"),
    "photonic mesh too big for memory": (_flags("--device", "sim://photonic?layers=64,99999999"), "GB"),
    "hidden layers too big for memory": (_flags("--hidden", "60000,60000"), "GB"),
    "directions too many for memory": (_flags("--estimator", "weight", "--directions", "1000", "--hidden", "20000"),
                                       "--directions"),
    "labels out of range": (_data(train_labels=_labels([0, 1, 12])), "label 12"),
    "negative labels": (_data(train_labels=_labels([0, -1, 2], np.int8)), "label -1"),
    "zero samples": (_data(train_images=np.zeros((0, 4, 4), np.uint8), train_labels=np.zeros(0, np.uint8)),
                     "no samples"),
    "NaN pixels": (_data(train_images=_nan_images()), "not finite"),
    "truncated .gz": (_data(gz=GZ[: len(GZ) // 2]), ".gz"),
    "garbage .gz": (_data(gz=bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8))), ".gz"),
    "directions 100000": (_flags("--directions", "100000"), "'directions'"),
    "lr inf": (_flags("--lr", "inf"), "'lr'"),
    "lr nan": (_flags("--lr", "nan"), "'lr'"),
    "lr too large": (_flags("--lr", "1e6"), "'lr'"),
    "eps nan": (_flags("--eps", "nan"), "'eps'"),
    "eps inf": (_flags("--eps", "inf"), "'eps'"),
    "eps too large": (_flags("--eps", "5"), "'eps'"),
    "momentum nan": (_flags("--momentum", "nan"), "'momentum'"),
    "margin inf": (_flags("--margin", "inf"), "'margin'"),
    "width too large": (_flags("--hidden", "100000000"), "'hidden'"),
    "batch size too large": (_flags("--batch-size", "1000000000"), "'batch_size'"),
    "epochs too many": (_flags("--epochs", "1000000000000"), "'epochs'"),
    "features too many": (_flags("--features", "10000000"), "'features'"),
    "downsample too large": (_flags("--downsample", "1000"), "'downsample'"),
    "threads too many": (_flags("--threads", "100000"), "'threads'"),
}


@pytest.fixture
def small_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every memory check sees a 16 GiB machine, so the refusals do not depend on this one's."""
    monkeypatch.setattr(hil.resources, "physical_memory", lambda: 16 * GIB)
    monkeypatch.setattr(simulators.options, "physical_memory", lambda: 16 * GIB)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_no_run_folder(tmp_path, monkeypatch, capsys, small_machine, case):
    setup, needle = CASES[case]
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    monkeypatch.chdir(tmp_path)
    argv = setup(tmp_path)
    assert main(["train", "--epochs", "1", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hil: error:") and "\n" not in err, err
    assert needle in err, err
    assert not list(tmp_path.glob("runs/*"))
