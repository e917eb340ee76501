import gzip
import re
import struct

import numpy as np
import pytest
import torch

from hil.data import Dataset, DatasetError, from_arrays, from_torch, load_dataset, load_npz, read_idx


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


def _arrays(n_train: int = 12, n_test: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x_train": rng.random((n_train, 2, 3), dtype=np.float32), "y_train": np.arange(n_train) % 3,
            "x_test": rng.random((n_test, 2, 3), dtype=np.float32), "y_test": np.arange(n_test) % 3}


def test_arrays_from_numpy_or_torch_make_the_same_dataset_named_by_their_digest():
    arrays = _arrays()
    from_numpy = from_arrays(**arrays)
    from_tensors = from_arrays(**{k: torch.from_numpy(v) for k, v in arrays.items()})
    assert from_numpy.name == from_tensors.name and from_numpy.name.startswith("arrays:")
    assert from_numpy.features == 6 and from_numpy.classes == 3  # images flattened, classes from the labels
    assert torch.equal(from_numpy.x_train, from_tensors.x_train) and from_numpy.y_test.dtype == torch.long
    assert from_arrays(**arrays, classes=5).classes == 5
    arrays["x_train"][0, 0, 0] += 0.5
    assert from_arrays(**arrays).name != from_numpy.name


def _changed(**changes: object) -> dict[str, object]:
    return {**_arrays(), **changes}


@pytest.mark.parametrize("arrays, message", [
    (_changed(y_train=np.arange(11) % 3), "x_train (12, 2, 3) and y_train (11,) do not match"),
    (_changed(x_test=np.zeros((6, 3, 2), np.float32)), "differ in shape"),
    (_changed(x_train=np.zeros(12, np.float32)), "one sample per row"),
    (_changed(y_test=np.array([0, 1, 2, 0, 1, -1])), "y_test: sample 5 has label -1"),
    (_changed(y_train=np.arange(12) % 3 * 1.0), "y_train holds float64 values; give integer labels"),
    (_changed(x_train=np.array([["a"] * 6] * 12)), "x_train holds <U1 values"),
    (_changed(x_test=np.full((6, 2, 3), np.nan, np.float32)), "x_test: sample 0 has pixels that are not finite"),
    (_changed(x_train=np.zeros((0, 2, 3), np.float32), y_train=np.zeros(0, int)), "x_train holds no samples"),
    (_changed(y_train=np.zeros(12, int), y_test=np.zeros(6, int)), "at least two classes"),
])
def test_arrays_are_checked_at_the_edge(arrays, message):
    with pytest.raises(DatasetError, match=re.escape(message)):
        from_arrays(**arrays)


def test_a_label_beyond_the_classes_given_is_refused():
    with pytest.raises(DatasetError, match="y_train: sample 2 has label 2, and labels must be 0..1"):
        from_arrays(**_arrays(), classes=2)


def test_torch_datasets_of_pairs_become_arrays():
    arrays = {k: torch.from_numpy(v) for k, v in _arrays().items()}
    train = torch.utils.data.TensorDataset(arrays["x_train"], arrays["y_train"])
    test = torch.utils.data.TensorDataset(arrays["x_test"], arrays["y_test"])
    assert from_torch(train, test).name == from_arrays(*arrays.values()).name


def test_torch_datasets_that_are_not_map_style_pairs_are_refused():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter([])

    pairs = torch.utils.data.TensorDataset(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(DatasetError, match="train set has no length; give a map-style"):
        from_torch(Stream(), pairs)
    with pytest.raises(DatasetError, match="test set's item 0 is not an \\(x, y\\) pair"):
        from_torch(pairs, torch.utils.data.TensorDataset(torch.zeros(4, 3)))


def test_npz_files_load_by_name_and_bad_ones_say_why(tmp_path):
    arrays = _arrays()
    np.savez(tmp_path / "good.npz", **arrays)
    data = load_dataset(f"npz:{tmp_path / 'good.npz'}", classes=[0, 2])
    assert data.classes == 2 and data.features == 6 and set(data.y_train.tolist()) == {0, 1}
    np.savez(tmp_path / "short.npz", x_train=arrays["x_train"])
    (tmp_path / "text.npz").write_text("x_train")
    np.save(tmp_path / "one.npy", arrays["x_train"])
    np.savez(tmp_path / "objects.npz", **{**arrays, "x_test": np.array([object()] * 6)})
    for name, message in [("short.npz", "has no y_train, x_test, y_test; save it with numpy.savez"),
                          ("text.npz", "is not a numpy .npz archive"), ("one.npy", "is not a numpy .npz archive"),
                          ("objects.npz", "holds arrays of Python objects"), ("none.npz", "does not exist")]:
        with pytest.raises(DatasetError, match=message):
            load_npz(tmp_path / name)
