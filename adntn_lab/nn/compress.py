"""``compress_model``: replace a model's dense layers by generated ones.

Covered: ``nn.Linear``, ``nn.Conv1d``/``Conv2d``/``Conv3d`` (grouped and depthwise too, every
padding mode), transformers' GPT-2-style ``Conv1D`` and ``nn.MultiheadAttention`` (packed
in-projection as one generated weight). Everything else is named in the summary with the reason
it stayed dense.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch

from torch import nn

from ..resources import ResourceLimitError
from .attention import ADNTNMultiheadAttention
from .conv import CONV_TYPES
from .conv1d import ADNTNConv1D, conv1d_class
from .linear import ADNTNLinear, GeneratedLayer, outside_inference_mode

__all__ = ["CompressionSummary", "adntn_layers", "compress_model", "format_summary",
           "generated_modules", "module_names"]

SUPPORTED = "Linear/Conv1d/Conv2d/Conv3d/Conv1D/MultiheadAttention"
#: generated replacement of each torch convolution, by kind
_CONVS = {dense.__name__: generated for dense, generated in CONV_TYPES.items()}
#: every module class whose weights are generated
GENERATED_TYPES = (GeneratedLayer, ADNTNMultiheadAttention)


class CompressionSummary(list):
    """The rows of :func:`compress_model` (one dict per module considered); prints as a table.

    Row keys: ``name``, ``aliases`` (other names of the same module), ``kind`` (module type),
    ``shape`` (dense weight shape; one per projection for attention), ``params_before``
    (dense weights), ``params_after`` (generator parameters, or the dense count when kept),
    ``ratio``, ``family`` (None when kept dense), ``reason`` (why it was kept dense, else
    None) and ``status`` (a one-line description).
    """

    def __str__(self) -> str:
        return format_summary(self)

    def _repr_pretty_(self, p, cycle) -> None:  # IPython / Jupyter
        p.text(str(self))


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or name == p for p in patterns)


def adntn_layers(model: nn.Module) -> dict[str, GeneratedLayer]:
    """Generated linear/convolutional layers of a model by qualified name (the projections
    of a generated attention appear as ``<attention>.in_proj`` etc.)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, GeneratedLayer)}


def module_names(model: nn.Module) -> dict[int, list[str]]:
    """Every name of every submodule, keyed by ``id(module)`` (a module registered twice has
    two names), in registration order; the root is left out."""
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if name:
            names.setdefault(id(module), []).append(name)
    return names


def generated_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The outermost generated modules (layers and attentions) by their first name."""
    out: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, GENERATED_TYPES) and name and not any(
                name.startswith(p + ".") for p in out):
            out[name] = module
    return out


def _kind(module: nn.Module) -> str | None:
    """The supported dense type of ``module``, or None."""
    if isinstance(module, GENERATED_TYPES):
        return None
    if isinstance(module, nn.MultiheadAttention):
        return "MultiheadAttention"
    if isinstance(module, nn.Linear):
        return "Linear"
    for dense in CONV_TYPES:
        if isinstance(module, dense):
            return dense.__name__
    conv1d = conv1d_class()
    if conv1d is not None and isinstance(module, conv1d):
        return "Conv1D"
    return None


def _weights(module: nn.Module, kind: str) -> dict[str, nn.Parameter]:
    """The dense weights a generated replacement would take over, by attribute path."""
    if kind != "MultiheadAttention":
        return {"weight": module.weight}
    if module._qkv_same_embed_dim:
        names = ("in_proj_weight",)
    else:
        names = ("q_proj_weight", "k_proj_weight", "v_proj_weight")
    out = {n: getattr(module, n) for n in names}
    out["out_proj.weight"] = module.out_proj.weight
    return out


def _parameter_owners(model: nn.Module, names: dict[int, list[str]]) -> dict[int, list[str]]:
    """``id(parameter)`` -> qualified names of the parameter in every module that holds it
    directly (two entries from different modules mean a tie)."""
    owners: dict[int, list[str]] = {}
    seen = set()
    for module in model.modules():
        if id(module) in seen or id(module) not in names:
            continue
        seen.add(id(module))
        for pname, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{names[id(module)][0]}.{pname}")
    return owners


def _ties(module, kind, names, owners) -> list[str]:
    """Names of parameters outside ``module`` that share one of its dense weights."""
    own = tuple(f"{n}." for n in names[id(module)])
    tied = []
    for p in _weights(module, kind).values():
        tied += [o for o in owners.get(id(p), []) if not o.startswith(own)]
    return tied


def _check_patterns(what: str, patterns, rows: list[str], supported: list[str]) -> None:
    unmatched = [p for p in patterns if not any(_matches(n, [p]) for n in rows)]
    if not unmatched:
        return
    close = sorted({m for p in unmatched
                    for m in difflib.get_close_matches(p, rows, n=5, cutoff=0.5)})
    listed = ", ".join(supported[:30]) + (", ..." if len(supported) > 30 else "")
    raise ValueError(
        f"{what} pattern(s) {unmatched} match no {SUPPORTED} layer; patterns are matched "
        f"against full module names with fnmatch (e.g. 'encoder.*' for everything inside "
        f"'encoder'). Close matches: {close or 'none'}. The layers are [{listed}]"
    )


# built outside inference mode: the copy's parameters must stay trainable
@outside_inference_mode
def compress_model(model: nn.Module, topology: str = "ttn", *, include=None, exclude=None,
                   min_params: int = 1024, fit_steps: int = 0, lr: float = 0.02,
                   verbose: bool = False, **build_options) -> nn.Module:
    """Return a copy of ``model`` whose dense layers are generated by tensor networks.

    Parameters
    ----------
    model : nn.Module
        Left untouched; the result is a deep copy.
    topology : str
        Generator family for every replaced layer.
    include, exclude : str or list of str, optional
        Full module names or fnmatch patterns (``"fc1"``, ``"features.*"``); a pattern that
        matches no module is an error that lists close matches. By default every supported
        layer (nn.Linear, nn.Conv1d/2d/3d, transformers' Conv1D, nn.MultiheadAttention) is a
        candidate. A module registered under two names is replaced under both (one
        generated layer); a layer whose weight is tied to another module's parameter (GPT-2's
        ``lm_head.weight is wte.weight``) stays dense, since replacing it would untie them.
    min_params : int
        Layers with fewer dense weights stay dense.
    fit_steps : int
        With ``fit_steps > 0`` each new layer is fitted to the trained weight first (and its
        biases copied); otherwise it starts from a fresh calibrated init.
    lr : float
        Adam learning rate of the fit.
    verbose : bool
        Print the summary table.
    **build_options
        ``bond_dim``, ``activation``, family options (see :func:`adntn_lab.build`).

    Returns
    -------
    nn.Module
        The new model; ``new.adntn_summary`` (a :class:`CompressionSummary`) has one row per
        module considered: replaced, kept dense (and why), or of an unsupported type.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"compress_model needs an nn.Module, got {type(model).__name__}")
    _refuse_lazy(model)
    new = copy.deepcopy(model)
    names = module_names(new)
    modules = {id(m): m for m in new.modules()}
    covered = tuple(f"{n}." for n, m in new.named_modules(remove_duplicate=False)
                    if n and (isinstance(m, GENERATED_TYPES) or _kind(m) is not None))
    rows = []  # (module, kind or None) in registration order; MHA children belong to the MHA
    for key, module_list in names.items():
        module, first = modules[key], module_list[0]
        if isinstance(module, GENERATED_TYPES) or any(first.startswith(c) for c in covered):
            continue
        kind = _kind(module)
        if kind is not None or any(True for _ in module.parameters(recurse=False)):
            rows.append((module, kind))
    row_names = [n for m, _ in rows for n in names[id(m)]]
    supported = [n for m, k in rows if k for n in names[id(m)]]
    if include is not None:
        include = [include] if isinstance(include, str) else list(include)
        _check_patterns("include", include, row_names, supported)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude or [])
    _check_patterns("exclude", exclude, row_names, supported)
    owners = _parameter_owners(new, names)

    summary = CompressionSummary()
    for module, kind in rows:
        aliases = names[id(module)]
        if include is not None and not any(_matches(n, include) for n in aliases):
            continue
        if any(_matches(n, exclude) for n in aliases):
            continue
        row = _row(aliases, module, kind)
        if kind is None:
            summary.append(_kept(row, f"unsupported module type {type(module).__name__}"))
            continue
        tied = _ties(module, kind, names, owners)
        if tied:
            summary.append(_kept(row, f"weight tied to {', '.join(sorted(set(tied)))}; "
                                      "replacing it would untie them"))
            continue
        before = row["params_before"]
        if before < min_params:
            summary.append(_kept(row, f"< min_params={min_params}"))
            continue
        try:
            layer = _generated(module, kind, topology, fit_steps, lr, build_options)
        except ResourceLimitError as err:  # refused before allocating: say which layer
            raise ResourceLimitError(f"layer {aliases[0]!r}: {err}") from None
        after = _generator_params(layer)
        if after >= before:
            summary.append(_kept(row, f"generator has {after:,} >= {before:,}"))
            continue
        for name in aliases:
            parent_name, _, child = name.rpartition(".")
            parent = new.get_submodule(parent_name) if parent_name else new
            setattr(parent, child, layer)
        fit = getattr(layer, "fit_error", None)
        row.update(params_after=after, ratio=before / after, family=layer_family(layer),
                   status=topology + (f", fit error {fit:.3f}" if fit is not None else "")
                   + (f" (shared: also {', '.join(aliases[1:])})" if len(aliases) > 1
                      else ""))
        summary.append(row)
    new.adntn_summary = summary
    if verbose:
        print(format_summary(summary))
    return new


def _refuse_lazy(model: nn.Module) -> None:
    """Lazy modules (nn.LazyLinear, nn.LazyConv2d, ...) have no weight shape until their first
    forward pass, so nothing could be sized for them yet."""
    lazy = [f"{n or '(the model)'} ({type(m).__name__})" for n, m in model.named_modules()
            if any(nn.parameter.is_lazy(p) for p in m.parameters(recurse=False))]
    if lazy:
        raise ValueError(f"compress_model needs every weight's shape, but {', '.join(lazy)} "
                         "still hold uninitialised lazy parameters; run one forward pass "
                         "(model(example_input)) first, then compress")


def _row(aliases, module, kind) -> dict:
    if kind is None:
        weights = {n: p for n, p in module.named_parameters(recurse=False)}
        main = weights.get("weight", next(iter(weights.values())))
        shape, before = tuple(main.shape), sum(p.numel() for p in weights.values())
    else:
        weights = _weights(module, kind)
        shapes = [tuple(p.shape) for p in weights.values()]
        shape = shapes[0] if len(shapes) == 1 else tuple(shapes)
        before = sum(p.numel() for p in weights.values())
    return {"name": aliases[0], "aliases": aliases[1:], "kind": kind or type(module).__name__,
            "shape": shape, "params_before": before, "params_after": before, "ratio": 1.0,
            "family": None, "reason": None, "status": ""}


def _kept(row: dict, reason: str) -> dict:
    row.update(reason=reason, status=f"kept dense ({reason})")
    return row


def _generator_params(layer) -> int:
    if isinstance(layer, ADNTNMultiheadAttention):
        return sum(p.generator.num_params for p in layer.projections().values())
    return layer.generator.num_params


def layer_family(layer) -> str:
    """The generator family of a generated layer or attention."""
    if isinstance(layer, ADNTNMultiheadAttention):
        return layer.out_proj.generator.family
    return layer.generator.family


def _generated(module, kind, topology, fit_steps, lr, options):
    """The generated replacement of ``module``: fitted to its weight with ``fit_steps > 0``,
    else freshly initialised (on the module's device, in its dtype)."""
    p = _weights(module, kind)["weight" if kind != "MultiheadAttention" else "out_proj.weight"]
    factory = {"device": p.device, "dtype": p.dtype}
    if kind == "MultiheadAttention":
        return ADNTNMultiheadAttention.from_attention(module, topology, fit_steps=fit_steps,
                                                      lr=lr, **options)
    if fit_steps > 0:
        if kind in _CONVS:
            return _CONVS[kind].from_conv(module, topology, fit_steps=fit_steps, lr=lr,
                                          **options)
        if kind == "Conv1D":
            return ADNTNConv1D.from_conv1d(module, topology, fit_steps=fit_steps, lr=lr,
                                           **options)
        return ADNTNLinear.from_linear(module, topology, fit_steps=fit_steps, lr=lr, **options)
    if kind in _CONVS:
        return _CONVS[kind](module.in_channels, module.out_channels, module.kernel_size,
                            module.stride, module.padding, module.dilation, module.groups,
                            module.bias is not None, module.padding_mode, topology=topology,
                            **factory, **options)
    if kind == "Conv1D":
        return ADNTNConv1D(module.nf, module.nx, topology=topology, **factory, **options)
    return ADNTNLinear(module.in_features, module.out_features, bias=module.bias is not None,
                       topology=topology, **factory, **options)


def format_summary(summary) -> str:
    """The rows of a compression summary as an aligned text table."""
    def shape_text(shape):
        if shape and isinstance(shape[0], tuple):
            return "+".join("x".join(map(str, s)) for s in shape)
        return "x".join(map(str, shape))

    width = max([5, *(len(s["name"]) for s in summary)])
    kind_w = max([4, *(len(s["kind"]) for s in summary)])
    shape_w = max([5, *(len(shape_text(s["shape"])) for s in summary)])
    lines = [f"{'layer':<{width}}  {'type':<{kind_w}}  {'shape':<{shape_w}}  {'dense':>10}  "
             f"{'generated':>10}  {'ratio':>9}  status"]
    for s in summary:
        lines.append(f"{s['name']:<{width}}  {s['kind']:<{kind_w}}  "
                     f"{shape_text(s['shape']):<{shape_w}}  {s['params_before']:>10,}  "
                     f"{s['params_after']:>10,}  {s['ratio']:>8.1f}x  {s['status']}")
    before = sum(s["params_before"] for s in summary)
    after = sum(s["params_after"] for s in summary)
    if summary:
        lines.append(f"{'total':<{width}}  {'':<{kind_w}}  {'':<{shape_w}}  {before:>10,}  "
                     f"{after:>10,}  {before / max(after, 1):>8.1f}x")
    return "\n".join(lines)
