"""Datasets: the bundled digits, IDX (MNIST, Fashion-MNIST) and CIFAR python batches from a folder,
arrays saved with ``numpy.savez``, and arrays or torch datasets handed over in Python.

Nothing downloads: digits ship with scikit-learn, other sets come from a folder the user names
(default ``/usr/share/datasets/<name>`` where Debian's dataset packages install them).
"""

import gzip
import hashlib
import pickle
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulators.conv import parse_image

DEFAULT_DIRS = {
    "mnist": Path("/usr/share/datasets/mnist"),
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
    "cifar10": Path("/usr/share/datasets/cifar10"),
    "cifar100": Path("/usr/share/datasets/cifar100"),
}
# the standard python versions: pickled dicts of uint8 rows (3 x 32 x 32, channel-major) and labels
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_CLASSES = 10  # MNIST and Fashion-MNIST
NAMES = ("digits", *DEFAULT_DIRS)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
NPZ, ARRAYS = "npz:", "arrays:"
"""Prefixes of a dataset name: ``npz:PATH`` (a file), ``arrays:<digest>`` (arrays given in Python, not loadable
by name)."""


class DatasetError(ValueError):
    """A dataset is missing, malformed or does not fit the device."""


@dataclass
class Dataset:
    """Train, validation and test tensors, features scaled to [0, 1].

    The validation set is carved from the training set (:meth:`with_validation`); every choice a
    run or a sweep makes (rates, the best epoch) is made on it, and the test set is only reported.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int
    x_val: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    y_val: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    @property
    def features(self) -> int:
        return self.x_train.shape[1]

    def with_validation(self, fraction: float, seed: int) -> "Dataset":
        """Move ``fraction`` of every class of the training set, drawn by ``seed``, into a validation set.

        Stratified, so the validation set has the training set's class balance; both keep the
        training set's order. A fraction of 0 leaves the training set whole and no validation set.
        """
        if fraction == 0:
            return self
        gen = torch.Generator().manual_seed(seed)
        held = torch.zeros(len(self.y_train), dtype=torch.bool)
        for label in self.y_train.unique():
            members = torch.nonzero(self.y_train == label).squeeze(1)
            count = round(fraction * len(members))
            held[members[torch.randperm(len(members), generator=gen)[:count]]] = True
        if held.all() or not held.any():
            raise DatasetError(f"{self.name}: a validation fraction of {fraction} of {len(held)} training samples "
                               "leaves no training or no validation samples; pick a fraction between them")
        return replace(self, x_train=self.x_train[~held], y_train=self.y_train[~held],
                       x_val=self.x_train[held], y_val=self.y_train[held])

    def select(self, classes: list[int] | None = None, downsample: int = 1) -> "Dataset":
        """Optionally with images average-pooled by ``downsample``, optionally only some classes."""
        data = self.downsampled(downsample) if downsample > 1 else self
        return data if classes is None else data.subset(classes)

    def subset(self, classes: list[int]) -> "Dataset":
        """Only the samples of ``classes``, relabelled 0, 1, ... in the order given (binary tasks)."""
        bad = [c for c in classes if not 0 <= c < self.classes]
        if bad or len(set(classes)) != len(classes) or len(classes) < 2:
            raise DatasetError(f"classes {classes}: give at least two distinct labels of 0..{self.classes - 1}")
        relabel = torch.full((self.classes,), -1, dtype=torch.long)
        relabel[torch.tensor(classes)] = torch.arange(len(classes))
        keep_train, keep_test = relabel[self.y_train] >= 0, relabel[self.y_test] >= 0
        return Dataset(f"{self.name}{classes}", self.x_train[keep_train], relabel[self.y_train[keep_train]],
                       self.x_test[keep_test], relabel[self.y_test[keep_test]], len(classes))

    def downsampled(self, factor: int) -> "Dataset":
        """Square images of 1 or 3 channels average-pooled by ``factor`` (2: 28x28 to 14x14).

        For devices with few inputs, such as a photonic mesh, whose size grows with its modes squared.
        """
        try:
            channels, side, _ = parse_image("", self.features)
        except ValueError:
            raise DatasetError(f"{self.name}: {self.features} features are not a square image to downsample") from None
        if side % factor:
            raise DatasetError(f"{self.name}: {side}x{side} images do not divide by downsample={factor}; "
                               f"use a factor that divides {side}")

        def pool(x: torch.Tensor) -> torch.Tensor:
            images = x.reshape(len(x), channels, side, side)
            return torch.nn.functional.avg_pool2d(images, factor).reshape(len(x), -1)

        return Dataset(f"{self.name}/{factor}", pool(self.x_train), self.y_train, pool(self.x_test), self.y_test,
                       self.classes)


def load_dataset(name: str, data_dir: Path | None = None, classes: list[int] | None = None,
                 downsample: int = 1) -> Dataset:
    """Load ``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100`` or ``npz:PATH``; optionally some
    classes, optionally with images average-pooled by ``downsample``."""
    if name == "digits":
        data = _digits()
    elif name in CIFAR_FILES:
        data = _cifar(name, data_dir or DEFAULT_DIRS[name])
    elif name in DEFAULT_DIRS:
        data = _idx_dataset(name, data_dir or DEFAULT_DIRS[name])
    elif name.startswith(NPZ):
        data = load_npz(Path(name.removeprefix(NPZ)))
    elif name.startswith(ARRAYS):
        raise DatasetError(f"dataset {name!r} is arrays given in Python, which only Python has; continue the run "
                           "there: hil.train(resume=RUN_DIR, dataset=hil.data.from_arrays(...)) on the same arrays "
                           "(to train on them from the command line, save them with numpy.savez and use --dataset "
                           "npz:PATH)")
    else:
        raise DatasetError(f"unknown dataset {name!r}; choose {', '.join(NAMES)} or npz:PATH")
    return data.select(classes, downsample)


ArrayLike = Any
"""A numpy array, a torch tensor, or anything ``numpy.asarray`` takes."""


def from_arrays(x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike, y_test: ArrayLike,
                classes: int | None = None) -> Dataset:
    """A dataset from arrays (numpy or torch): samples one per row (any shape, flattened), integer labels.

    ``classes`` defaults to the largest label plus one. Everything is checked here, and a problem is a
    :class:`DatasetError` naming the argument. The dataset is named ``arrays:<digest of the arrays>``, so a
    run records which arrays it trained on and a resume on other arrays is refused.
    """
    data = _checked("from_arrays", dict(zip(NPZ_KEYS, (x_train, y_train, x_test, y_test))), classes)
    digest = hashlib.sha256(str(data.classes).encode())
    for tensor in (data.x_train, data.y_train, data.x_test, data.y_test):
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return replace(data, name=f"{ARRAYS}{digest.hexdigest()[:16]}")


def from_torch(train: "torch.utils.data.Dataset[Any]", test: "torch.utils.data.Dataset[Any]",
               classes: int | None = None) -> Dataset:
    """A dataset from two map-style torch datasets whose items are ``(x, y)`` pairs; see :func:`from_arrays`."""
    return from_arrays(*_stacked("train", train), *_stacked("test", test), classes=classes)


def _stacked(split: str, dataset: "torch.utils.data.Dataset[Any]") -> tuple[torch.Tensor, torch.Tensor]:
    """All of a map-style dataset's ``(x, y)`` items as one tensor of samples and one of labels."""
    try:
        size = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise DatasetError(f"the {split} set has no length; give a map-style torch Dataset (len and [i]), or "
                           "arrays to hil.data.from_arrays") from None
    xs, ys = [], []
    for i in range(size):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DatasetError(f"the {split} set's item {i} is not an (x, y) pair; give a dataset of (sample, "
                               "label) items")
        xs.append(torch.as_tensor(np.asarray(item[0])))
        ys.append(torch.as_tensor(np.asarray(item[1])))
    if len({x.shape for x in xs}) > 1:
        raise DatasetError(f"the {split} set's samples differ in shape ({xs[0].shape} and others); give samples "
                           "of one shape")
    return (torch.stack(xs) if xs else torch.empty(0, 1)), (torch.stack(ys) if ys else torch.empty(0))


def load_npz(path: Path) -> Dataset:
    """Arrays saved with ``numpy.savez`` under the keys ``x_train``, ``y_train``, ``x_test``, ``y_test``."""
    where = f"npz file {str(path)!r}"
    not_npz = f"{where} is not a numpy .npz archive; save the arrays with numpy.savez"
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{where} does not exist") from None
    except (EOFError, OSError, ValueError, zipfile.BadZipFile):  # ValueError: pickled data, which is refused
        raise DatasetError(not_npz) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetError(not_npz)
    with archive:
        missing = [key for key in NPZ_KEYS if key not in archive.files]
        if missing:
            raise DatasetError(f"{where} has no {', '.join(missing)}; save it with numpy.savez(path, "
                               f"{', '.join(f'{k}=...' for k in NPZ_KEYS)})")
        try:
            arrays = {key: archive[key] for key in NPZ_KEYS}
        except ValueError:
            raise DatasetError(f"{where} holds arrays of Python objects; it was not loaded: save arrays of "
                               "numbers") from None
        except (EOFError, OSError, zipfile.BadZipFile, zlib.error) as err:
            raise DatasetError(f"{where} is damaged ({err}); save it again") from None
    return _checked(where, arrays, None, name=f"{NPZ}{path}")


def _checked(where: str, given: dict[str, ArrayLike], classes: int | None, name: str = "arrays") -> Dataset:
    """Validate ``given`` (the :data:`NPZ_KEYS` arrays) into a dataset; ``where`` starts every refusal."""
    arrays = {}
    for key, value in given.items():
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
        kinds = "biu" if key.startswith("y") else "biuf"
        if array.dtype.kind not in kinds:
            what = "integer labels" if key.startswith("y") else "numbers"
            raise DatasetError(f"{where}: {key} holds {array.dtype} values; give {what}")
        arrays[key] = array
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f"{where}: x_{split} {x.shape} and y_{split} {y.shape} do not match; give one "
                               "sample per row of x and one label per sample in y")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DatasetError(f"{where}: train samples {arrays['x_train'].shape[1:]} and test samples "
                           f"{arrays['x_test'].shape[1:]} differ in shape")
    labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
    if classes is None:
        classes = int(labels.max()) + 1 if len(labels) else 0
    if classes < 2:
        raise DatasetError(f"{where}: {classes} classes; a classifier needs labels of at least two classes")
    for split in ("train", "test"):
        check_samples(f"{where}: x_{split}", arrays[f"x_{split}"], f"{where}: y_{split}", arrays[f"y_{split}"],
                      classes)
    x_train, x_test = (torch.from_numpy(np.ascontiguousarray(arrays[k], dtype=np.float32).reshape(
        len(arrays[k]), -1)) for k in ("x_train", "x_test"))
    if x_train.shape[1] == 0:
        raise DatasetError(f"{where}: samples have no features")
    return Dataset(name, x_train, torch.from_numpy(arrays["y_train"].astype(np.int64)), x_test,
                   torch.from_numpy(arrays["y_test"].astype(np.int64)), classes)


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
        images_path, labels_path = _find(folder, images), _find(folder, labels)
        x, y = read_idx(images_path), read_idx(labels_path)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f"{name} {split}: images {x.shape} and labels {y.shape} do not match")
        check_samples(repr(str(images_path)), x, repr(str(labels_path)), y, IDX_CLASSES)
        parts[split] = (torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0),
                        torch.from_numpy(y.astype(np.int64)))
    return Dataset(name, *parts["train"], *parts["test"], IDX_CLASSES)


def check_samples(x_name: str, x: np.ndarray, y_name: str, y: np.ndarray, classes: int) -> None:
    """Refuse a split with no samples, a pixel that is not a finite number or a label outside 0..classes-1.

    ``x_name`` and ``y_name`` say where the samples and labels came from (a file, an argument).
    """
    if len(x) == 0:
        raise DatasetError(f"{x_name} holds no samples; give the complete set")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        at = int(np.argmin(np.isfinite(x).reshape(len(x), -1).all(1)))
        raise DatasetError(f"{x_name}: sample {at} has pixels that are not finite (NaN or inf); "
                           "fix or drop that sample")
    bad = np.flatnonzero((y < 0) | (y >= classes))
    if len(bad):
        raise DatasetError(f"{y_name}: sample {bad[0]} has label {y[bad[0]]}, and labels must be "
                           f"0..{classes - 1}; fix the labels or use the dataset's own")


def _cifar(name: str, folder: Path) -> Dataset:
    """CIFAR from its python batches in ``folder`` (or in the archive's own subfolder of it)."""
    subfolder, train_files, test_files, label_key, classes = CIFAR_FILES[name]
    if (folder / subfolder).is_dir():
        folder = folder / subfolder
    if not folder.is_dir():
        raise DatasetError(f"{name}: folder {str(folder)!r} does not exist; pass --data-dir with the "
                           f"extracted python version ({subfolder}/)")
    parts = []
    for files in (train_files, test_files):
        xs, ys = [], []
        for file in files:
            path = folder / file
            if not path.is_file():
                raise DatasetError(f"{str(folder)!r} has no {file} (the python version of {name})")
            with path.open("rb") as f:
                batch = pickle.load(f, encoding="bytes")  # the format's own encoding; a folder the user named
            x = np.asarray(batch[b"data"], dtype=np.uint8)
            if x.ndim != 2 or x.shape[1] != 3072 or len(batch[label_key]) != len(x):
                raise DatasetError(f"{str(path)!r}: expected rows of 3072 values and one label each")
            y = np.asarray(batch[label_key], dtype=np.int64)
            check_samples(repr(str(path)), x, repr(str(path)), y, classes)
            xs.append(x)
            ys.append(y)
        parts.append((torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0),
                      torch.from_numpy(np.concatenate(ys))))
    return Dataset(name, *parts[0], *parts[1], classes)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{str(folder)!r} has no {stem} or {stem}.gz")


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into an array, checking its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError, zlib.error) as err:
        raise DatasetError(f"{str(path)!r} cannot be read ({err}); a .gz file may be truncated or not gzip at "
                           "all: fetch it again") from None
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
