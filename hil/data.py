"""Datasets: the bundled digits and IDX (MNIST, Fashion-MNIST) files from a folder.

Nothing downloads: digits ship with scikit-learn, IDX files come from a folder the user names
(default ``/usr/share/datasets/<name>`` where Debian's dataset packages install them).
"""

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEFAULT_DIRS = {
    "mnist": Path("/usr/share/datasets/mnist"),
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetError(ValueError):
    """A dataset is missing, malformed or does not fit the device."""


@dataclass
class Dataset:
    """Train and test tensors, features scaled to [0, 1]."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int

    @property
    def features(self) -> int:
        return self.x_train.shape[1]


def load_dataset(name: str, data_dir: Path | None = None) -> Dataset:
    """Load ``digits``, ``mnist`` or ``fashion-mnist``."""
    if name == "digits":
        return _digits()
    if name in DEFAULT_DIRS:
        return _idx_dataset(name, data_dir or DEFAULT_DIRS[name])
    raise DatasetError(f"unknown dataset {name!r}; choose digits, mnist or fashion-mnist")


def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, bunch.target, test_size=0.2, random_state=0, stratify=bunch.target
    )
    return Dataset("digits", torch.from_numpy(x_tr), torch.from_numpy(y_tr).long(),
                   torch.from_numpy(x_te), torch.from_numpy(y_te).long(), 10)


def _idx_dataset(name: str, folder: Path) -> Dataset:
    if not folder.is_dir():
        raise DatasetError(
            f"{name}: folder {str(folder)!r} does not exist; pass --data-dir with the IDX files"
            + (" (Debian: apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else "")
        )
    parts = {}
    for split, (images, labels) in IDX_FILES.items():
        x = read_idx(_find(folder, images))
        y = read_idx(_find(folder, labels))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f"{name} {split}: images {x.shape} and labels {y.shape} do not match")
        parts[split] = (torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0),
                        torch.from_numpy(y.astype(np.int64)))
    return Dataset(name, *parts["train"], *parts["test"], int(parts["train"][1].max()) + 1)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{str(folder)!r} has no {stem} or {stem}.gz")


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into an array, checking its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetError(f"{str(path)!r} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = header + dtype.itemsize * int(np.prod(dims))
    if len(data) != expected:
        raise DatasetError(f"{str(path)!r}: header says {expected} bytes, file has {len(data)}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
