"""``ADNTNMultiheadAttention``: :class:`torch.nn.MultiheadAttention` with generated projections.

The packed in-projection (``3E x E``) is ONE generated weight, so a single generator ties the
query, key and value maps together; when ``kdim`` or ``vdim`` differ from ``embed_dim`` the
three projections are generated separately (as ``nn.MultiheadAttention`` stores them). The
output projection is an :class:`ADNTNLinear`. Everything else -- masks, ``batch_first``,
``need_weights``, dropout, ``bias_k``/``bias_v``, the inference fast path -- is
``nn.MultiheadAttention``'s own code, which reads the generated weights through the same
attribute names (``in_proj_weight``, ``q_proj_weight``, ``out_proj.weight``, ...).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..generator import Generator
from .fit import fit_to_weight, warn_if_poor
from .linear import ADNTNLinear, outside_inference_mode

__all__ = ["ADNTNMultiheadAttention"]


class ADNTNMultiheadAttention(nn.MultiheadAttention):
    """Drop-in replacement for :class:`torch.nn.MultiheadAttention` with generated weights.

    Parameters
    ----------
    embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim, batch_first
        As in ``nn.MultiheadAttention``.
    topology : str
        Generator family of every projection.
    generators : dict of str -> Generator, optional
        Ready generators by projection (``"in_proj"`` or ``"q_proj"``/``"k_proj"``/
        ``"v_proj"``, and ``"out_proj"``), e.g. when loading a saved model.
    device, dtype : optional
    **build_options
        Passed to :func:`adntn_lab.build`; the separate q/k/v projections get seeds
        ``seed``, ``seed + 1``, ``seed + 2`` so that they do not start identical.

    Shapes
    ------
    query (L, N, E) or (N, L, E) with ``batch_first``; key (S, N, kdim); value (S, N, vdim)
    -> (attn_output (L, N, E), attn_weights (N, L, S) or None)
    """

    @outside_inference_mode
    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim=None, vdim=None,
                 batch_first: bool = False, *, topology: str = "ttn",
                 generators: dict[str, Generator] | None = None, device=None, dtype=None,
                 **build_options):
        nn.Module.__init__(self)  # nn.MultiheadAttention's own init allocates dense weights
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of "
                             f"num_heads ({num_heads})")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        self.add_zero_attn = add_zero_attn
        generators = dict(generators or {})
        seed = build_options.pop("seed", 0)

        def projection(name, fan_in, fan_out, offset, has_bias=False):
            return ADNTNLinear(fan_in, fan_out, bias=has_bias, topology=topology,
                               generator=generators.get(name), seed=seed + offset, **factory,
                               **build_options)

        if self._qkv_same_embed_dim:
            self.in_proj = projection("in_proj", embed_dim, 3 * embed_dim, 0)
        else:
            self.q_proj = projection("q_proj", embed_dim, embed_dim, 0)
            self.k_proj = projection("k_proj", self.kdim, embed_dim, 1)
            self.v_proj = projection("v_proj", self.vdim, embed_dim, 2)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = projection("out_proj", embed_dim, embed_dim, 3, has_bias=bias)
        if bias:
            with torch.no_grad():
                self.out_proj.bias.zero_()  # as nn.MultiheadAttention initialises it
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)
        else:
            self.bias_k = self.bias_v = None
        self.fit_error: float | None = None

    # the attribute names nn.MultiheadAttention.forward (and nn.TransformerEncoderLayer's
    # fast path) read the weights from
    @property
    def in_proj_weight(self) -> torch.Tensor | None:
        """Packed (3E, E) in-projection, or None when q/k/v are separate."""
        return self.in_proj.generated() if self._qkv_same_embed_dim else None

    @property
    def q_proj_weight(self) -> torch.Tensor | None:
        return None if self._qkv_same_embed_dim else self.q_proj.generated()

    @property
    def k_proj_weight(self) -> torch.Tensor | None:
        return None if self._qkv_same_embed_dim else self.k_proj.generated()

    @property
    def v_proj_weight(self) -> torch.Tensor | None:
        return None if self._qkv_same_embed_dim else self.v_proj.generated()

    def projections(self) -> dict[str, ADNTNLinear]:
        """The generated projections by name."""
        names = ("in_proj",) if self._qkv_same_embed_dim else ("q_proj", "k_proj", "v_proj")
        return {n: getattr(self, n) for n in (*names, "out_proj")}

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True,
                attn_mask=None, average_attn_weights: bool = True, is_causal: bool = False):
        # the parent reads each weight more than once per call: generate each one once
        with contextlib.ExitStack() as stack:
            for proj in self.projections().values():
                stack.enter_context(proj.generated.cached())
            return super().forward(query, key, value, key_padding_mask=key_padding_mask,
                                   need_weights=need_weights, attn_mask=attn_mask,
                                   average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)

    @property
    def num_params(self) -> int:
        """Trainable scalars, biases included."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        gens = {n: p.generator for n, p in self.projections().items()}
        parts = ", ".join(f"{n}={g.family} {g.num_params:,}" for n, g in gens.items())
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, kdim={self.kdim}, "
                f"vdim={self.vdim}, batch_first={self.batch_first}, {parts}")

    def config(self) -> dict:
        """Constructor arguments (JSON-able) of the equivalent ``nn.MultiheadAttention``."""
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "dropout": self.dropout, "bias": self.in_proj_bias is not None,
                "add_bias_kv": self.bias_k is not None, "add_zero_attn": self.add_zero_attn,
                "kdim": self.kdim, "vdim": self.vdim, "batch_first": self.batch_first}

    @outside_inference_mode
    def to_dense(self) -> nn.MultiheadAttention:
        """An ``nn.MultiheadAttention`` holding the generated weights and copies of the rest."""
        ref = self.out_proj.generated()
        dense = nn.MultiheadAttention(**self.config(), device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for name, proj in self.projections().items():
                if name == "out_proj":
                    dense.out_proj.weight.copy_(proj.generated())
                else:
                    getattr(dense, f"{name}_weight").copy_(proj.generated())
            for name in ("in_proj_bias", "bias_k", "bias_v"):
                if getattr(self, name) is not None:
                    getattr(dense, name).copy_(getattr(self, name))
            if dense.out_proj.bias is not None:
                dense.out_proj.bias.copy_(self.out_proj.bias)
        return dense.train(self.training)

    @classmethod
    @outside_inference_mode
    def from_attention(cls, attention: nn.MultiheadAttention, topology: str = "ttn", *,
                       fit_steps: int = 0, lr: float = 0.02,
                       **build_options) -> ADNTNMultiheadAttention:
        """Replace a (trained) ``nn.MultiheadAttention``: the biases are copied and, with
        ``fit_steps > 0``, each projection is fitted to the dense weight it replaces
        (``.fit_error`` holds the largest relative error reached)."""
        if not isinstance(attention, nn.MultiheadAttention):
            raise TypeError(f"from_attention needs an nn.MultiheadAttention, got "
                            f"{type(attention).__name__}")
        ref = attention.out_proj.weight
        layer = cls(**_config_of(attention), topology=topology, device=ref.device,
                    dtype=ref.dtype, **build_options)
        with torch.no_grad():
            for name in ("in_proj_bias", "bias_k", "bias_v"):
                if getattr(attention, name) is not None:
                    getattr(layer, name).copy_(getattr(attention, name))
            if attention.out_proj.bias is not None:
                layer.out_proj.bias.copy_(attention.out_proj.bias)
        layer.fit_error = None
        if fit_steps > 0:
            errors = []
            for name, proj in layer.projections().items():
                target = (attention.out_proj.weight if name == "out_proj"
                          else getattr(attention, f"{name}_weight"))
                proj.fit_error = fit_to_weight(proj.generated, target.detach(),
                                               steps=fit_steps, lr=lr)
                errors.append(proj.fit_error)
            layer.fit_error = max(errors)
            warn_if_poor(layer.fit_error, "from_attention")
        return layer


def _config_of(attention: nn.MultiheadAttention) -> dict:
    return {"embed_dim": attention.embed_dim, "num_heads": attention.num_heads,
            "dropout": attention.dropout, "bias": attention.in_proj_bias is not None,
            "add_bias_kv": attention.bias_k is not None,
            "add_zero_attn": attention.add_zero_attn, "kdim": attention.kdim,
            "vdim": attention.vdim, "batch_first": attention.batch_first}
