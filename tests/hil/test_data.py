import gzip
import struct

import numpy as np
import pytest
import torch

from hil.data import Dataset, DatasetError, load_dataset, read_idx


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


def _cifar_batch(path, rows, labels, key=b"labels"):
    import pickle

    path.write_bytes(pickle.dumps({b"batch_label": b"x", key: labels, b"data": rows}))


@pytest.mark.parametrize("name, key, train_files, test_files, inner", [
    ("cifar10", b"labels", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "cifar-10-batches-py"),
    ("cifar100", b"fine_labels", ["train"], ["test"], "cifar-100-python"),
])
def test_cifar_python_batches_load_from_the_folder_or_its_archive_subfolder(tmp_path, name, key, train_files,
                                                                            test_files, inner):
    rng = np.random.default_rng(0)
    folder = tmp_path / inner
    folder.mkdir()
    for i, file in enumerate(train_files + test_files):
        rows = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        rows[0, 0] = i  # which file a sample came from
        _cifar_batch(folder / file, rows, [i % 10] * 4, key)
    data = load_dataset(name, tmp_path)
    assert data.features == 3072 and data.classes == (10 if name == "cifar10" else 100)
    assert len(data.x_train) == 4 * len(train_files) and len(data.x_test) == 4
    assert round(float(data.x_train[0, 0]) * 255) == 0 and round(float(data.x_test[0, 0]) * 255) == len(train_files)
    assert 0 <= data.x_train.min() and data.x_train.max() <= 1
    assert load_dataset(name, folder).y_train.tolist() == data.y_train.tolist()


def test_cifar_with_a_missing_or_malformed_batch_says_which(tmp_path):
    with pytest.raises(DatasetError, match="data_batch_1"):
        load_dataset("cifar10", tmp_path)
    for i in range(1, 6):
        _cifar_batch(tmp_path / f"data_batch_{i}", np.zeros((2, 3072), np.uint8), [0, 1])
    _cifar_batch(tmp_path / "test_batch", np.zeros((2, 100), np.uint8), [0, 1])
    with pytest.raises(DatasetError, match="3072"):
        load_dataset("cifar10", tmp_path)


def test_a_class_subset_keeps_only_those_labels_relabelled_in_order():
    full = load_dataset("digits")
    pair = load_dataset("digits", classes=[8, 3])
    assert pair.classes == 2 and set(pair.y_train.tolist()) == {0, 1}
    assert len(pair.x_train) == int(((full.y_train == 8) | (full.y_train == 3)).sum())
    assert (full.x_train[full.y_train == 8][0] == pair.x_train[pair.y_train == 0][0]).all()
    for bad in ([3], [3, 3], [3, 10]):
        with pytest.raises(DatasetError, match="two distinct labels"):
            load_dataset("digits", classes=bad)


def test_downsampling_average_pools_each_image():
    full = load_dataset("digits")
    small = load_dataset("digits", downsample=2)
    assert small.features == 16 and len(small.x_train) == len(full.x_train)
    block = full.x_train[5].reshape(8, 8)[2:4, 4:6].mean()
    assert small.x_train[5].reshape(4, 4)[1, 2] == pytest.approx(float(block))
    assert torch.equal(small.y_test, full.y_test)
    labels = torch.zeros(4).long()
    colour = Dataset("rgb", torch.rand(4, 3 * 4 * 4), labels, torch.rand(4, 48), labels, 2)
    pooled = colour.downsampled(2)
    assert pooled.features == 12
    assert pooled.x_train[0, 4] == pytest.approx(float(colour.x_train[0].reshape(3, 4, 4)[1, :2, :2].mean()))


def test_a_downsample_that_does_not_divide_the_image_says_so():
    with pytest.raises(DatasetError, match="8x8 images do not divide by downsample=3"):
        load_dataset("digits", downsample=3)
