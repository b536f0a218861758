"""Reference classifiers whose layers are compressed in experiments.

- :class:`FC2` — the two-layer perceptron of the ADTN paper (``fc1`` is the hidden layer,
  784 -> 256 on MNIST, the usual target of compression).
- :class:`LeNet5` — LeNet-5 with ``conv1``, ``conv2`` and three fully connected layers
  ``fc1`` (-> 120), ``fc2`` (120 -> 84), ``fc3`` (84 -> classes); adapts to small images.
- :class:`SmallVGG` — a small VGG-style CNN for CIFAR-10: three blocks of two 3x3 convolutions
  with batch norm, then ``fc1``, ``fc2``, ``fc3``.
- :class:`WideMLP` — a wide three-layer perceptron (784 -> 4096 -> 4096 -> 10 on MNIST) whose
  ``fc1`` and ``fc2`` (3.2 M and 16.8 M weights) are layers of the size the compression papers
  report on (AlexNet/VGG-16 fully connected layers).

Layer names are stable so that ``compress_model(..., include=["fc1"])`` patterns match.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
from torch import nn

__all__ = ["FC2", "MODELS", "LeNet5", "SmallVGG", "WideMLP", "build_model"]


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def _pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or (height, width), got {value!r}")
        return _check_positive_int(name, value[0]), _check_positive_int(name, value[1])
    v = _check_positive_int(name, value)
    return v, v


class FC2(nn.Module):
    """Two-layer perceptron: flatten -> ``fc1`` -> ReLU -> ``fc2``.

    Parameters
    ----------
    in_features : int, default 784
        Input size after flattening.
    hidden : int, default 256
        Width of the hidden layer (``fc1`` has shape (hidden, in_features)).
    num_classes : int, default 10
        Number of output logits.

    Shapes
    ------
    input ``(batch, *)`` with ``prod(*) == in_features`` -> logits ``(batch, num_classes)``.
    """

    def __init__(self, in_features: int = 784, hidden: int = 256, num_classes: int = 10):
        super().__init__()
        in_features = _check_positive_int("in_features", in_features)
        hidden = _check_positive_int("hidden", hidden)
        num_classes = _check_positive_int("num_classes", num_classes)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.flatten(x))))


class LeNet5(nn.Module):
    """LeNet-5: ``conv1`` (6 maps, 5x5) -> pool -> ``conv2`` (16 maps, 5x5) -> pool ->
    ``fc1`` (120) -> ``fc2`` (84) -> ``fc3`` (classes), ReLU activations, max pooling.

    ``conv1`` pads by 2 (the 28x28 MNIST variant of the 32x32 original). On images too small
    for an unpadded ``conv2`` (under 18 pixels a side, e.g. 8x8 digits) ``conv2`` pads by 2 as
    well, so that ``fc1`` always receives at least a 1x1 map per channel.

    Parameters
    ----------
    in_channels : int, default 1
    num_classes : int, default 10
    input_size : int or (int, int), default 28
        Image height and width; at least 4.

    Shapes
    ------
    input ``(batch, in_channels, H, W)`` -> logits ``(batch, num_classes)``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size=28):
        super().__init__()
        in_channels = _check_positive_int("in_channels", in_channels)
        num_classes = _check_positive_int("num_classes", num_classes)
        h, w = _pair("input_size", input_size)
        if min(h, w) < 4:
            raise ValueError(f"LeNet5 needs images of at least 4x4 pixels, got {h}x{w}")
        small = min(h, w) // 2 < 9
        pad2 = 2 if small else 0
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5, padding=pad2)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

        def out(s):
            s = s // 2  # conv1 keeps the size, then pool
            s = s + 2 * pad2 - 4  # conv2
            return s // 2  # pool

        self.feature_shape = (16, out(h), out(w))
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(int(np.prod(self.feature_shape)), 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = self.flatten(x)
        x = self.act(self.fc1(x))
        x = self.act(self.fc2(x))
        return self.fc3(x)


class SmallVGG(nn.Module):
    """A small VGG-style CNN for 32x32 colour images (CIFAR-10).

    ``features``: three blocks ``conv{b}_1``, ``conv{b}_2`` (3x3, padding 1, batch norm, ReLU)
    with ``widths`` channels, each block followed by 2x2 max pooling; then ``fc1`` -> ReLU ->
    ``fc2`` -> ReLU -> ``fc3``. The fully connected layers are the compression targets, as for
    VGG-16 in the ADTN paper.

    Parameters
    ----------
    num_classes : int, default 10
    in_channels : int, default 3
    input_size : int or (int, int), default 32
        Image height and width; at least 8.
    widths : tuple of 3 ints, default (32, 64, 128)
        Channels of the three convolution blocks.
    hidden : int, default 256
        Width of ``fc1`` and ``fc2``.
    dropout : float, default 0.0
        Dropout before ``fc2`` and ``fc3``.

    Shapes
    ------
    input ``(batch, in_channels, H, W)`` -> logits ``(batch, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size=32,
        widths=(32, 64, 128),
        hidden: int = 256,
        dropout: float = 0.0,
    ):
        super().__init__()
        num_classes = _check_positive_int("num_classes", num_classes)
        in_channels = _check_positive_int("in_channels", in_channels)
        hidden = _check_positive_int("hidden", hidden)
        h, w = _pair("input_size", input_size)
        if min(h, w) < 8:
            raise ValueError(f"SmallVGG needs images of at least 8x8 pixels, got {h}x{w}")
        widths = tuple(widths)
        if len(widths) != 3:
            raise ValueError(f"widths must hold 3 channel counts, got {widths!r}")
        widths = tuple(_check_positive_int("widths", c) for c in widths)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for b, c in enumerate(widths, start=1):
            for k in (1, 2):
                layers[f"conv{b}_{k}"] = nn.Conv2d(c_in, c, kernel_size=3, padding=1, bias=False)
                layers[f"bn{b}_{k}"] = nn.BatchNorm2d(c)
                layers[f"relu{b}_{k}"] = nn.ReLU()
                c_in = c
            layers[f"pool{b}"] = nn.MaxPool2d(2)
        self.features = nn.Sequential(layers)
        self.feature_shape = (widths[-1], h // 8, w // 8)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(int(np.prod(self.feature_shape)), hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(float(dropout))

    def forward(self, x):
        x = self.flatten(self.features(x))
        x = self.drop(self.act(self.fc1(x)))
        x = self.drop(self.act(self.fc2(x)))
        return self.fc3(x)


class WideMLP(nn.Module):
    """Wide three-layer perceptron: flatten -> ``fc1`` -> ReLU -> ``fc2`` -> ReLU -> ``fc3``.

    Parameters
    ----------
    in_features : int, default 784
        Input size after flattening.
    hidden : int, default 4096
        Width of both hidden layers (``fc1`` is (hidden, in_features), ``fc2`` is
        (hidden, hidden)).
    num_classes : int, default 10

    Shapes
    ------
    input ``(batch, *)`` with ``prod(*) == in_features`` -> logits ``(batch, num_classes)``.
    """

    def __init__(self, in_features: int = 784, hidden: int = 4096, num_classes: int = 10):
        super().__init__()
        in_features = _check_positive_int("in_features", in_features)
        hidden = _check_positive_int("hidden", hidden)
        num_classes = _check_positive_int("num_classes", num_classes)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)
        self.act = nn.ReLU()

    def forward(self, x):
        x = self.act(self.fc1(self.flatten(x)))
        return self.fc3(self.act(self.fc2(x)))


MODELS = ("fc2", "lenet5", "vgg", "wide-mlp")
_MODEL_ALIASES = {
    "fc-2": "fc2",
    "mlp": "fc2",
    "lenet": "lenet5",
    "lenet-5": "lenet5",
    "smallvgg": "vgg",
    "small-vgg": "vgg",
    "small_vgg": "vgg",
    "widemlp": "wide-mlp",
    "wide_mlp": "wide-mlp",
}


def _info(dataset_info) -> tuple[tuple[int, ...], int]:
    if isinstance(dataset_info, Mapping):
        shape, classes = dataset_info.get("input_shape"), dataset_info.get("num_classes")
    else:
        shape = getattr(dataset_info, "image_shape", None) or getattr(
            dataset_info, "input_shape", None
        )
        classes = getattr(dataset_info, "num_classes", None)
    if shape is None or classes is None:
        raise TypeError(
            "dataset_info must be a Dataset from load_dataset or a mapping with "
            f"'input_shape' and 'num_classes', got {dataset_info!r}"
        )
    return tuple(int(s) for s in shape), _check_positive_int("num_classes", classes)


def build_model(name: str, dataset_info, **kwargs) -> nn.Module:
    """Build a reference model sized for a dataset.

    Parameters
    ----------
    name : str
        ``"fc2"``, ``"lenet5"``, ``"vgg"`` or ``"wide-mlp"`` (aliases: ``"mlp"``, ``"lenet"``,
        ``"small-vgg"``, ``"wide_mlp"``).
    dataset_info : Dataset or mapping
        Anything with ``input_shape`` (``(C, H, W)`` or ``(features,)``) and ``num_classes``,
        e.g. the result of :func:`adntn_lab.data.load_dataset`.
    **kwargs
        Passed to the model's constructor (e.g. ``hidden=128`` for FC2 or WideMLP).

    Returns
    -------
    torch.nn.Module
        FC2 / WideMLP with ``in_features = prod(input_shape)``; LeNet5 / SmallVGG with the dataset's
        channels and image size (these need image-shaped input, ``flatten=False``).
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, one of {', '.join(MODELS)}")
    key = _MODEL_ALIASES.get(name.strip().lower(), name.strip().lower())
    shape, classes = _info(dataset_info)
    if key == "fc2":
        return FC2(in_features=int(np.prod(shape)), num_classes=classes, **kwargs)
    if key == "wide-mlp":
        return WideMLP(in_features=int(np.prod(shape)), num_classes=classes, **kwargs)
    if key in ("lenet5", "vgg"):
        if len(shape) != 3:
            raise ValueError(
                f"model {key!r} needs image input (channels, height, width), got input_shape "
                f"{shape}; load the dataset with flatten=False or use model 'fc2'"
            )
        c, h, w = shape
        if key == "lenet5":
            return LeNet5(in_channels=c, num_classes=classes, input_size=(h, w), **kwargs)
        return SmallVGG(num_classes=classes, in_channels=c, input_size=(h, w), **kwargs)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
