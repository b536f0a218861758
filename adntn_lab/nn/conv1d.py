"""``ADNTNConv1D``: transformers' GPT-2-style ``Conv1D`` with a generated weight.

``Conv1D(nf, nx)`` is a linear layer whose weight is stored transposed, shape ``(nx, nf)``:
``y = x @ weight + bias``. The generator makes the usual ``(out, in) = (nf, nx)`` matrix;
``.weight`` hands it out transposed, as the module it replaces does. transformers is never
imported here: the class is looked up among the modules already loaded.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from ..generator import Generator
from .fit import fit_to_weight, warn_if_poor
from .linear import ADNTNLinear, _copy_into, outside_inference_mode

__all__ = ["ADNTNConv1D", "conv1d_class"]


def conv1d_class() -> type | None:
    """``transformers.pytorch_utils.Conv1D`` if transformers is loaded, else None.

    A model holding a Conv1D has necessarily imported it, so looking in ``sys.modules``
    finds it without making transformers a dependency.
    """
    module = sys.modules.get("transformers.pytorch_utils")
    return getattr(module, "Conv1D", None)


class ADNTNConv1D(ADNTNLinear):
    """Drop-in replacement for ``transformers.pytorch_utils.Conv1D`` with a generated weight.

    Parameters
    ----------
    nf : int
        Output features.
    nx : int
        Input features.
    topology, schedule, generator, device, dtype, **build_options
        As for :class:`ADNTNLinear`.

    Shapes
    ------
    input (..., nx) -> output (..., nf); ``.weight`` is (nx, nf) as in Conv1D
    """

    @outside_inference_mode
    def __init__(self, nf: int, nx: int, *, topology: str = "ttn", schedule: str = "auto",
                 generator: Generator | None = None, device=None, dtype=None, **build_options):
        super().__init__(nx, nf, bias=True, topology=topology, schedule=schedule,
                         generator=generator, device=device, dtype=dtype, **build_options)
        self.nf, self.nx = nf, nx
        with torch.no_grad():
            self.bias.zero_()  # Conv1D's own bias init

    @property
    def weight(self) -> torch.Tensor:
        """The generated weight in Conv1D's layout, shape (nx, nf)."""
        return self.generated().t()

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}, " + super().extra_repr()

    @outside_inference_mode
    def to_dense(self) -> nn.Module:
        """A transformers ``Conv1D`` holding the generated weight (transformers must be
        installed, as it is wherever such a layer came from)."""
        cls = conv1d_class()
        if cls is None:
            from transformers.pytorch_utils import Conv1D as cls
        w = self.generated().detach()
        dense = cls(self.nf, self.nx).to(device=w.device, dtype=w.dtype)
        _copy_into(dense, w.t(), self.bias)
        return dense.train(self.training)

    @classmethod
    @outside_inference_mode
    def from_conv1d(cls, conv, topology: str = "ttn", *, fit_steps: int = 500, lr: float = 0.02,
                    schedule: str = "auto", **build_options) -> ADNTNConv1D:
        """Compress a trained ``Conv1D``: its bias is copied and the cores are fitted to its
        weight (``.fit_error`` holds the relative Frobenius error reached)."""
        conv_cls = conv1d_class()
        if conv_cls is None or not isinstance(conv, conv_cls):
            raise TypeError(f"from_conv1d needs a transformers Conv1D, got {type(conv).__name__}")
        p = conv.weight
        layer = cls(conv.nf, conv.nx, topology=topology, schedule=schedule, device=p.device,
                    dtype=p.dtype, **build_options)
        with torch.no_grad():
            layer.bias.copy_(conv.bias)
        layer.fit_error = fit_to_weight(layer.generated, p.detach().t(), steps=fit_steps, lr=lr)
        if fit_steps > 0:
            warn_if_poor(layer.fit_error, "from_conv1d")
        return layer
