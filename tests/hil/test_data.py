import gzip
import struct

import numpy as np
import pytest

from hil.data import DatasetError, load_dataset, read_idx


def _write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    code = {np.uint8: 0x08}[array.dtype.type]
    data = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data += array.tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def _fake_mnist(folder, compress):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        suffix = ".gz" if compress else ""
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}",
                   rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), compress)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}",
                   (np.arange(n) % 10).astype(np.uint8), compress)


def test_digits_are_bundled_and_scaled():
    data = load_dataset("digits")
    assert data.features == 64 and data.classes == 10
    assert len(data.x_train) + len(data.x_test) == 1797
    assert 0 <= data.x_train.min() and data.x_train.max() <= 1


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder_loads(tmp_path, compress):
    _fake_mnist(tmp_path, compress)
    data = load_dataset("fashion-mnist", tmp_path)
    assert data.x_train.shape == (30, 784) and data.x_test.shape == (10, 784)
    assert data.classes == 10 and data.x_train.max() <= 1


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("mnist", tmp_path / "nope")
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path)


def test_corrupt_idx_files_are_refused(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DatasetError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    _write_idx(short, np.zeros((4, 3), dtype=np.uint8))
    short.write_bytes(short.read_bytes()[:-2])
    with pytest.raises(DatasetError, match="header says"):
        read_idx(short)


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="digits"):
        load_dataset("imagenet")
