"""``ADNTNConv1d``, ``ADNTNConv2d``, ``ADNTNConv3d``: convolutions whose kernels are generated
by tensor networks.

A kernel of shape (C_out, C_in/groups, *kernel_size) is generated as a matrix
(C_out, C_in/groups * prod(kernel_size)): a grouped convolution's groups share one generator,
so its rows are the output channels of every group. The convolution itself is torch's.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn
from torch.nn import functional as F

from ..generator import Generator, build
from .linear import GeneratedLayer, GeneratedWeight, _copy_into, outside_inference_mode

__all__ = ["ADNTNConv1d", "ADNTNConv2d", "ADNTNConv3d", "CONV_TYPES", "check_conv_options"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _positive_tuple(name: str, value, ndim: int, minimum: int = 1) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * ndim
    if len(values) != ndim or any(isinstance(v, bool) or not isinstance(v, numbers.Integral)
                                  or v < minimum for v in values):
        kind = "positive" if minimum > 0 else "non-negative"
        raise ValueError(f"{name} must be a {kind} integer or a tuple of {ndim} of them, "
                         f"got {value!r}")
    return tuple(int(v) for v in values)


def check_conv_options(in_channels, out_channels, groups, padding_mode, padding, stride,
                       ndim: int = 2) -> None:
    """Reject convolution options that torch's own convolutions reject, saying what would
    work."""
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide both in_channels={in_channels} and "
                         f"out_channels={out_channels}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be an int, a tuple, 'same' or 'valid', got "
                             f"{padding!r}")
        if padding == "same" and any(s != 1 for s in _positive_tuple("stride", stride, ndim)):
            raise ValueError("padding='same' needs stride=1 (as in torch's convolutions); give "
                             "the padding as numbers for strided convolutions")


def _explicit_padding(padding, kernel_size, dilation) -> list[int]:
    """F.pad's (last-axis left, right, ..., first-axis left, right) for ``padding`` (numbers,
    'same' or 'valid'), as torch's convolutions compute it for non-zero padding modes."""
    if padding == "valid":
        return [0] * (2 * len(kernel_size))
    if padding == "same":
        pads = []
        for d, k in zip(reversed(dilation), reversed(kernel_size)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return pads
    return [p for p in reversed(padding) for _ in range(2)]


class _GeneratedConv(GeneratedLayer):
    """A torch convolution over ``_ndim`` spatial axes with a generated kernel."""

    _ndim: int  # set by each subclass, with the torch module and function it mirrors
    _dense: type[nn.Module]
    _conv: staticmethod

    @outside_inference_mode
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 topology: str = "ttn", generator: Generator | None = None, device=None,
                 dtype=None, **build_options):
        super().__init__()
        n = self._ndim
        check_conv_options(in_channels, out_channels, groups, padding_mode, padding, stride, n)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = int(groups)
        self.padding_mode = padding_mode
        self.kernel_size = _positive_tuple("kernel_size", kernel_size, n)
        self.stride = _positive_tuple("stride", stride, n)
        self.padding = padding if isinstance(padding, str) else _positive_tuple(
            "padding", padding, n, 0)
        self.dilation = _positive_tuple("dilation", dilation, n)
        fan_in = in_channels // self.groups * math.prod(self.kernel_size)
        if generator is None:
            generator = build(topology, fan_in, out_channels, **build_options)
        elif generator.shape != (out_channels, fan_in):
            raise ValueError(f"generator makes a {generator.shape} weight, a {out_channels}-"
                             f"channel {self.kernel_size} kernel over {in_channels} channels "
                             f"in {self.groups} group(s) needs ({out_channels}, {fan_in})")
        self.generated = GeneratedWeight(generator, device=device, dtype=dtype)
        self._init_bias(bias, out_channels, fan_in, device, dtype)

    @property
    def weight(self) -> torch.Tensor:
        """Kernel of shape (C_out, C_in/groups, *kernel_size)."""
        return self.generated().reshape(self.out_channels, self.in_channels // self.groups,
                                        *self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode == "zeros":
            return self._conv(x, self.weight, self.bias, self.stride, self.padding,
                              self.dilation, self.groups)
        pads = _explicit_padding(self.padding, self.kernel_size, self.dilation)
        return self._conv(F.pad(x, pads, mode=self.padding_mode), self.weight, self.bias,
                          self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        g = self.generator
        dense = self.out_channels * self.in_channels // self.groups * math.prod(self.kernel_size)
        extra = (f"groups={self.groups}, " if self.groups != 1 else "") + (
            f"padding_mode={self.padding_mode!r}, " if self.padding_mode != "zeros" else "")
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, {extra}topology={g.family}, "
                f"params={g.num_params:,} (dense {dense:,}, {g.compression_ratio:,.1f}x)")

    @outside_inference_mode
    def to_dense(self) -> nn.Module:
        """The torch convolution this layer replaces, holding the generated kernel (and a copy
        of the bias)."""
        w = self.generated().detach()
        dense = self._dense(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                            self.padding, self.dilation, self.groups,
                            bias=self.bias is not None, padding_mode=self.padding_mode,
                            device=w.device, dtype=w.dtype)
        _copy_into(dense, w, self.bias)
        return dense.train(self.training)

    @classmethod
    @outside_inference_mode
    def from_conv(cls, conv: nn.Module, topology: str = "ttn", *, fit_steps: int = 500,
                  lr: float = 0.02, **build_options) -> _GeneratedConv:
        """Compress a trained torch convolution of the same dimension; ``.fit_error`` holds
        the relative Frobenius error reached."""
        from .fit import fit_to_weight, warn_if_poor

        if not isinstance(conv, cls._dense):
            raise TypeError(f"{cls.__name__}.from_conv needs an nn.{cls._dense.__name__}, got "
                            f"{type(conv).__name__}")
        p = conv.weight
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                    conv.padding_mode, topology=topology, device=p.device, dtype=p.dtype,
                    **build_options)
        if conv.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(conv.bias)
        layer.fit_error = fit_to_weight(layer.generated, p.detach().reshape(p.shape[0], -1),
                                        steps=fit_steps, lr=lr)
        if fit_steps > 0:
            warn_if_poor(layer.fit_error, "from_conv")
        return layer


class ADNTNConv1d(_GeneratedConv):
    """Drop-in replacement for :class:`torch.nn.Conv1d` with a generated kernel.

    Parameters are those of nn.Conv1d, plus ``topology``, ``generator`` and the options of
    :func:`adntn_lab.build`; see :class:`ADNTNConv2d`.

    Shapes
    ------
    input (N, C_in, L) -> output (N, C_out, L')
    """

    _ndim = 1
    _dense = nn.Conv1d
    _conv = staticmethod(F.conv1d)


class ADNTNConv2d(_GeneratedConv):
    """Drop-in replacement for :class:`torch.nn.Conv2d` with a generated kernel.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, padding, dilation : as in nn.Conv2d
    groups : int
        As in nn.Conv2d; the generated matrix is (C_out, C_in/groups*kh*kw), one generator
        for all groups (a depthwise convolution has groups = C_in).
    bias : bool
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
    topology : str
    generator : Generator, optional
    **build_options
        Passed to :func:`adntn_lab.build`.

    Shapes
    ------
    input (N, C_in, H, W) -> output (N, C_out, H', W')
    """

    _ndim = 2
    _dense = nn.Conv2d
    _conv = staticmethod(F.conv2d)


class ADNTNConv3d(_GeneratedConv):
    """Drop-in replacement for :class:`torch.nn.Conv3d` with a generated kernel.

    Parameters are those of nn.Conv3d, plus ``topology``, ``generator`` and the options of
    :func:`adntn_lab.build`; see :class:`ADNTNConv2d`.

    Shapes
    ------
    input (N, C_in, D, H, W) -> output (N, C_out, D', H', W')
    """

    _ndim = 3
    _dense = nn.Conv3d
    _conv = staticmethod(F.conv3d)


#: the torch convolution each generated one replaces
CONV_TYPES = {nn.Conv1d: ADNTNConv1d, nn.Conv2d: ADNTNConv2d, nn.Conv3d: ADNTNConv3d}
