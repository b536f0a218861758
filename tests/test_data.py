"""Datasets: shapes, splits, normalisation and the offline error of torchvision datasets."""

from __future__ import annotations

import gzip
import types
import urllib.error

import numpy as np
import pytest
import torch

from adntn_lab import data as data_mod
from adntn_lab.data import DatasetUnavailableError, load_dataset


def _raw(ds, split):
    """Undo the normalisation: images back in [0, 1], as float64 numpy."""
    x, y = getattr(ds, split).tensors
    mean = np.asarray(ds.mean)[None, :, None, None]
    std = np.asarray(ds.std)[None, :, None, None]
    x = x.reshape(len(x), *ds.image_shape).double().numpy()
    return x * std + mean, y.numpy()


def test_digits_shapes_split_and_normalisation():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    x_tr, y_tr = ds.train.tensors
    x_te, y_te = ds.test.tensors
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert x_tr.shape == (1437, 1, 8, 8) and x_te.shape == (360, 1, 8, 8)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    # normalised with training statistics
    assert abs(float(x_tr.mean())) < 1e-4 and abs(float(x_tr.std()) - 1) < 1e-3
    # stratified: every class's test share is within one image of its overall share
    ref = load_digits()
    counts = np.bincount(ref.target, minlength=10)
    test_counts = np.bincount(y_te.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - counts * 360 / len(ref.target)) <= 1)
    # the two splits partition sklearn's images, with their labels
    rtr, ltr = _raw(ds, "train")
    rte, lte = _raw(ds, "test")
    got = sorted(
        (int(label), tuple(np.round(img.ravel() * 16).astype(int)))
        for img, label in zip(np.concatenate([rtr, rte]), np.concatenate([ltr, lte]))
    )
    want = sorted(
        (int(label), tuple(img.ravel().astype(int))) for img, label in zip(ref.images, ref.target)
    )
    assert got == want


def test_split_is_deterministic_and_seeded():
    a, b = load_dataset("digits"), load_dataset("digits", seed=0)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    c = load_dataset("digits", seed=1)
    assert len(c.test) == 360
    assert not torch.equal(a.test.tensors[1], c.test.tensors[1])


def test_mnist5k_matches_bundled_csv():
    ds = load_dataset("mnist-5k")
    assert len(ds.train) == 4000 and len(ds.test) == 1000
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert np.bincount(ds.train.tensors[1].numpy()).tolist() == [400] * 10
    assert np.bincount(ds.test.tensors[1].numpy()).tolist() == [100] * 10
    # independent reading of the CSV: 784 pixels then the label
    rows = {}
    with gzip.open(data_mod._mnist5k_path(), "rt") as f:
        for line in f:
            v = [int(t) for t in line.split(",")]
            rows[bytes(v[:784])] = v[784]
    assert len(rows) > 4900
    raw, labels = _raw(ds, "test")
    for img, label in zip(raw[:200], labels[:200]):
        key = bytes(np.round(img.ravel() * 255).astype(np.uint8).tolist())
        assert rows[key] == label


def test_flatten():
    a = load_dataset("digits")
    f = load_dataset("digits", flatten=True)
    assert f.input_shape == (64,) and f.image_shape == (1, 8, 8)
    assert torch.equal(f.train.tensors[0], a.train.tensors[0].reshape(-1, 64))


def test_bad_names_and_arguments():
    with pytest.raises(ValueError, match="digits.*mnist-5k"):
        load_dataset("imagenet")
    with pytest.raises(TypeError):
        load_dataset(3)
    with pytest.raises(TypeError, match="seed"):
        load_dataset("digits", seed=1.5)
    assert load_dataset("MNIST_5K").name == "mnist-5k"


def test_torchvision_missing_names_offline_choices(monkeypatch, tmp_path):
    monkeypatch.setattr(data_mod, "_import_torchvision", lambda: None)
    with pytest.raises(DatasetUnavailableError, match="torchvision.*'digits', 'mnist-5k'"):
        load_dataset("cifar10", root=tmp_path)


def _fake_torchvision(make, calls):
    class Fake:
        classes = [str(i) for i in range(10)]

        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            out = make(train, download)
            self.data, self.targets = out

    return types.SimpleNamespace(
        datasets=types.SimpleNamespace(MNIST=Fake, FashionMNIST=Fake, CIFAR10=Fake)
    )


def test_offline_download_failure_names_offline_choices(monkeypatch, tmp_path):
    calls = []

    def make(train, download):
        if not download:
            raise RuntimeError("Dataset not found. You can use download=True to download it")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data_mod, "_import_torchvision", lambda: _fake_torchvision(make, calls))
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("fashion-mnist", root=tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "'digits'" in msg and "'mnist-5k'" in msg
    assert "offline" in msg
    assert calls == [(str(tmp_path), True, False), (str(tmp_path), True, True)]

    calls.clear()
    with pytest.raises(DatasetUnavailableError, match="download=False"):
        load_dataset("mnist", root=tmp_path, download=False)
    assert calls == [(str(tmp_path), True, False)]  # no download attempted


def test_torchvision_arrays_are_converted(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    grey = {
        True: rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        False: rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
    }
    colour = {
        True: rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8),
        False: rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8),
    }
    labels = {True: list(rng.integers(0, 10, 30)), False: list(rng.integers(0, 10, 10))}

    def make_grey(train, download):
        return torch.from_numpy(grey[train]), torch.tensor(labels[train])

    def make_colour(train, download):
        return colour[train], labels[train]  # CIFAR keeps numpy HWC arrays and lists

    calls = []
    monkeypatch.setattr(
        data_mod, "_import_torchvision", lambda: _fake_torchvision(make_grey, calls)
    )
    ds = load_dataset("mnist", root=tmp_path)
    assert ds.input_shape == (1, 28, 28) and len(ds.train) == 30 and len(ds.test) == 10
    raw, y = _raw(ds, "train")
    np.testing.assert_allclose(raw[:, 0], grey[True] / 255.0, atol=1e-5)
    assert y.tolist() == [int(v) for v in labels[True]]

    monkeypatch.setattr(
        data_mod, "_import_torchvision", lambda: _fake_torchvision(make_colour, calls)
    )
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.input_shape == (3, 32, 32) and len(ds.mean) == 3
    raw, _ = _raw(ds, "test")
    np.testing.assert_allclose(raw, colour[False].transpose(0, 3, 1, 2) / 255.0, atol=1e-5)
