"""Deploying compressed models: dense copies, and one safetensors file of the cores.

``save_compressed`` writes the model's state (cores, constant tensors, biases and, by default,
every other parameter and buffer of the model) to ONE safetensors file whose metadata holds a
JSON description of every replaced layer: module name(s), kind, the dense layer's
configuration, and its generator(s) -- family, options, tensorisation modes, activation per
stage, seed, dtype. ``load_compressed`` rebuilds those layers inside a fresh dense model of the
same architecture and loads the tensors, so the outputs are bit-identical.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from ..activations import ACTIVATIONS
from ..families import FAMILIES
from ..generator import Generator, build
from .attention import ADNTNMultiheadAttention
from .compress import GENERATED_TYPES, generated_modules, module_names
from .conv import ADNTNConv1d, ADNTNConv2d, ADNTNConv3d
from .conv1d import ADNTNConv1D, conv1d_class
from .linear import ADNTNLinear, outside_inference_mode

__all__ = ["FORMAT", "decompress_model", "load_compressed", "read_header", "save_compressed"]

#: metadata ``format`` entry of the files this module writes
FORMAT = "adntn-compressed/1"


# ---------------------------------------------------------------------- dense copies
@outside_inference_mode
def decompress_model(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` with every generated layer replaced by its dense
    counterpart (``layer.to_dense()``): nn.Linear, nn.Conv2d, transformers' Conv1D or
    nn.MultiheadAttention holding the generated weights. A layer registered under two names
    stays one shared module."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"decompress_model needs an nn.Module, got {type(model).__name__}")
    new = copy.deepcopy(model)
    names = module_names(new)
    for module in generated_modules(new).values():
        _replace(new, names[id(module)], module.to_dense())
    if hasattr(new, "adntn_summary"):
        del new.adntn_summary
    return new


def _replace(model: nn.Module, names, layer: nn.Module) -> None:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer)


# ---------------------------------------------------------------------- header entries
# generated torch convolutions by their kind in a file ("conv1d" is transformers' Conv1D)
_CONV_KINDS = {"nn_conv1d": ADNTNConv1d, "conv2d": ADNTNConv2d, "conv3d": ADNTNConv3d}

# files written before groups and padding modes were saved hold ordinary convolutions
_CONV_DEFAULTS = {"groups": 1, "padding_mode": "zeros"}


def _conv_config(conv: nn.Module) -> dict:
    """The options a dense convolution and its generated replacement share, as saved."""
    return {"in_channels": conv.in_channels, "out_channels": conv.out_channels,
            "kernel_size": list(conv.kernel_size), "stride": list(conv.stride),
            "padding": conv.padding if isinstance(conv.padding, str) else list(conv.padding),
            "dilation": list(conv.dilation), "groups": conv.groups,
            "padding_mode": conv.padding_mode, "bias": conv.bias is not None}


def _kind(layer) -> str:
    # ADNTNConv1D before ADNTNLinear: it is a subclass
    for cls, kind in ((ADNTNMultiheadAttention, "multihead_attention"),
                      (ADNTNConv1D, "conv1d"), *((c, k) for k, c in _CONV_KINDS.items()),
                      (ADNTNLinear, "linear")):
        if isinstance(layer, cls):
            return kind
    raise TypeError(f"no saved form for {type(layer).__name__}")


def _layer_config(layer, kind: str) -> dict:
    if kind == "multihead_attention":
        return layer.config()
    if kind == "conv1d":
        return {"nf": layer.nf, "nx": layer.nx, "schedule": layer.schedule}
    if kind in _CONV_KINDS:
        return _conv_config(layer)
    return {"in_features": layer.in_features, "out_features": layer.out_features,
            "bias": layer.bias is not None, "schedule": layer.schedule}


def _generators(layer, kind: str) -> dict[str, Generator]:
    if kind == "multihead_attention":
        return {n: p.generator for n, p in layer.projections().items()}
    return {"": layer.generator}


def generator_spec(gen: Generator, where: str) -> dict:
    """JSON-able description from which :func:`rebuild_generator` makes the same structure."""
    unnamed = [a.name for a in gen.activations if a.name not in ACTIVATIONS]
    if unnamed:
        raise ValueError(f"{where}: activation(s) {unnamed} are Python callables, which a file "
                         f"cannot hold; use built-in activations ({', '.join(ACTIVATIONS)})")
    tz = gen.tensorization
    spec = {"family": gen.family, "in_features": tz.in_features,
            "out_features": tz.out_features, "out_modes": list(tz.out_modes),
            "in_modes": list(tz.in_modes), "activations": [a.name for a in gen.activations],
            "seed": gen.seed, "options": _jsonable(gen.options),
            "optimize": gen.program.optimize if isinstance(gen.program.optimize, str)
            else "auto"}
    if gen.family not in FAMILIES:  # a custom network: keep its whole structure
        spec["graph"] = gen.to_dict()
    return spec


def rebuild_generator(spec: dict) -> Generator:
    """The generator a :func:`generator_spec` describes (uncalibrated: its values are loaded
    afterwards)."""
    family = spec["family"]
    common = {"activation": spec["activations"], "seed": spec["seed"],
              "optimize": spec.get("optimize", "auto"), "calibrate": False}
    if "graph" in spec:
        from ..generator import from_graph

        return from_graph(spec["graph"], out_modes=spec["out_modes"],
                          in_modes=spec["in_modes"], **common)
    modes = ({} if family in ("brickwall", "lowrank")  # these choose their own legs
             else {"out_modes": spec["out_modes"], "in_modes": spec["in_modes"]})
    return build(family, spec["in_features"], spec["out_features"], **modes,
                 **spec["options"], **common)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


# ---------------------------------------------------------------------- save
def save_compressed(model: nn.Module, path, *, include_dense: bool = True) -> Path:
    """Write the model's generated layers (and by default the rest of its state) to one
    safetensors file.

    Parameters
    ----------
    model : nn.Module
        A model with generated layers (from :func:`compress_model`).
    path : str or Path
    include_dense : bool
        Also store every parameter and buffer outside the generated layers (embeddings,
        norms, layers kept dense), so that a fine-tuned model reloads exactly into an
        untrained one. ``False`` stores the generated layers only (a pretrained dense model
        supplies the rest).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        When the model has no generated layer, or a generator uses an unnamed activation.
    """
    from safetensors.torch import save_file

    gens = generated_modules(model)
    if not gens:
        raise ValueError("the model has no generated layer; compress it first "
                         "(adntn_lab.nn.compress_model) or save it with torch.save")
    names = module_names(model)
    layers = []
    for name, layer in gens.items():
        kind = _kind(layer)
        first = next(iter(layer.parameters()))
        layers.append({
            "name": name, "aliases": names[id(layer)][1:], "kind": kind,
            "config": _layer_config(layer, kind), "dtype": str(first.dtype).removeprefix("torch."),
            "generators": {sub: generator_spec(g, f"layer {name!r}")
                           for sub, g in _generators(layer, kind).items()},
        })
    prefixes = tuple(f"{n}." for layer in gens.values() for n in names[id(layer)])
    tensors, tied, seen = {}, {}, {}
    for key, value in model.state_dict(keep_vars=True).items():
        if not include_dense and not key.startswith(prefixes):
            continue
        if id(value) in seen:  # a tied parameter or a shared module: stored once
            tied[key] = seen[id(value)]
            continue
        seen[id(value)] = key
        tensors[key] = value.detach().cpu().contiguous().clone()
    metadata = {"format": FORMAT, "layers": json.dumps(layers), "tied": json.dumps(tied),
                "include_dense": json.dumps(include_dense)}
    path = Path(path)
    save_file(tensors, str(path), metadata=metadata)
    return path


def read_header(path) -> dict:
    """The metadata of a file written by :func:`save_compressed`, JSON entries decoded."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a compressed-model file (its metadata format is "
                         f"{meta.get('format')!r}, expected {FORMAT!r}); was it written by "
                         "adntn_lab.nn.save_compressed?")
    return {"format": meta["format"], "layers": json.loads(meta["layers"]),
            "tied": json.loads(meta["tied"]),
            "include_dense": json.loads(meta.get("include_dense", "true"))}


# ---------------------------------------------------------------------- load
def load_compressed(model: nn.Module, path) -> nn.Module:
    """Apply a file from :func:`save_compressed` to a dense model of the same architecture.

    Every layer the file describes is rebuilt (same generator structure, dtype and device
    as the dense layer it replaces) and replaces that layer under all its names; then the
    stored tensors are loaded. The model is changed in place and returned.

    Raises
    ------
    ValueError
        When the model lacks a module the file names, or that module has another type or
        shape, or the stored tensors do not fit the rebuilt model; the message names the
        module.
    """
    from safetensors.torch import load_file

    if not isinstance(model, nn.Module):
        raise TypeError(f"load_compressed needs an nn.Module, got {type(model).__name__}")
    header = read_header(path)
    names = module_names(model)
    built = []
    for entry in header["layers"]:
        dense = _dense_module(model, entry["name"])
        _check_dense(entry, dense)
        weight = next(iter(dense.parameters()))
        layer = _build_layer(entry, weight.device, getattr(torch, entry["dtype"]))
        layer.train(dense.training)
        built.append((entry, layer, sorted(set(names[id(dense)]) | {entry["name"]}
                                           | set(entry["aliases"]))))
    for _, layer, layer_names in built:
        _replace(model, layer_names, layer)
    tensors = load_file(str(path))
    for key, source in header["tied"].items():
        tensors[key] = tensors[source]
    if header["include_dense"]:
        _load_everything(model, tensors, [e["name"] for e, _, _ in built])
    else:
        for entry, layer, _ in built:
            prefix = entry["name"] + "."
            _load_layer(entry["name"], layer,
                        {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    return model


def _dense_module(model: nn.Module, name: str) -> nn.Module:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"the file describes a generated layer at {name!r}, but the model has "
                         "no module of that name; it was saved from another "
                         "architecture") from None
    if isinstance(module, GENERATED_TYPES):
        raise ValueError(f"module {name!r} is already generated; load_compressed needs a fresh "
                         "dense model (e.g. the original architecture before compress_model)")
    return module


_DENSE = {"linear": "nn.Linear", "conv1d": "transformers Conv1D",
          "multihead_attention": "nn.MultiheadAttention",
          **{k: f"nn.{c._dense.__name__}" for k, c in _CONV_KINDS.items()}}


def _check_dense(entry: dict, module: nn.Module) -> None:
    """Refuse a dense module of another type or shape than the one the file replaced."""
    kind, cfg, name = entry["kind"], entry["config"], entry["name"]
    if kind == "linear":
        ok = isinstance(module, nn.Linear) and not isinstance(module, GENERATED_TYPES)
        have = ok and {"in_features": module.in_features, "out_features": module.out_features,
                       "bias": module.bias is not None}
        want = {k: cfg[k] for k in ("in_features", "out_features", "bias")}
    elif kind in _CONV_KINDS:
        ok = isinstance(module, _CONV_KINDS[kind]._dense)
        have = ok and _conv_config(module)
        want = {k: cfg.get(k, _CONV_DEFAULTS.get(k)) for k in have} if ok else {}
    elif kind == "conv1d":
        cls = conv1d_class()
        ok = cls is not None and isinstance(module, cls)
        have = ok and {"nf": module.nf, "nx": module.nx}
        want = {"nf": cfg["nf"], "nx": cfg["nx"]}
    else:
        ok = isinstance(module, nn.MultiheadAttention)
        keys = ("embed_dim", "num_heads", "kdim", "vdim", "batch_first")
        have = ok and {k: getattr(module, k) for k in keys}
        want = {k: cfg[k] for k in keys}
    if not ok:
        raise ValueError(f"module {name!r} is a {type(module).__name__}, but the file holds a "
                         f"generated {_DENSE[kind]} for it; the model has another architecture")
    if have != want:
        diff = {k: (have[k], want[k]) for k in want if have[k] != want[k]}
        raise ValueError(f"module {name!r} does not match the file: "
                         + ", ".join(f"{k} is {h!r} in the model but {w!r} in the file"
                                     for k, (h, w) in diff.items()))


def _build_layer(entry: dict, device, dtype) -> nn.Module:
    kind, cfg = entry["kind"], dict(entry["config"])
    gens = {sub: rebuild_generator(spec) for sub, spec in entry["generators"].items()}
    factory = {"device": device, "dtype": dtype}
    if kind == "multihead_attention":
        return ADNTNMultiheadAttention(**cfg, generators=gens, **factory)
    if kind == "conv1d":
        return ADNTNConv1D(cfg["nf"], cfg["nx"], schedule=cfg["schedule"], generator=gens[""],
                           **factory)
    if kind in _CONV_KINDS:
        padding = cfg["padding"] if isinstance(cfg["padding"], str) else tuple(cfg["padding"])
        return _CONV_KINDS[kind](cfg["in_channels"], cfg["out_channels"],
                                 tuple(cfg["kernel_size"]), tuple(cfg["stride"]), padding,
                                 tuple(cfg["dilation"]), cfg.get("groups", 1), cfg["bias"],
                                 cfg.get("padding_mode", "zeros"), generator=gens[""], **factory)
    return ADNTNLinear(cfg["in_features"], cfg["out_features"], bias=cfg["bias"],
                       schedule=cfg["schedule"], generator=gens[""], **factory)


def _module_of(key: str, candidates) -> str:
    """The longest of ``candidates`` that is a module prefix of ``key`` (else its parent)."""
    best = [c for c in candidates if key.startswith(c + ".")]
    return max(best, key=len) if best else key.rpartition(".")[0] or key


def _load_layer(name: str, layer: nn.Module, state: dict) -> None:
    own = layer.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)
              and ".cores.A" not in f".{k}"]  # MPO bond dims may have been adapted
    if missing or unexpected or shapes:
        raise ValueError(f"the tensors stored for module {name!r} do not fit the rebuilt "
                         f"layer: missing {missing}, unexpected {unexpected}, shapes differ "
                         f"for {shapes}")
    layer.load_state_dict(state)


def _load_everything(model: nn.Module, tensors: dict, layer_names: list[str]) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [k for k in own if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)
              and ".cores.A" not in k]
    if missing or unexpected or shapes:
        modules = sorted({_module_of(k, layer_names) for k in (*missing, *unexpected, *shapes)})
        raise ValueError(f"the file does not fit this model at module(s) {modules}: "
                         f"missing {missing[:8]}, unexpected {unexpected[:8]}, shapes differ "
                         f"for {shapes[:8]}; it was saved from another architecture")
    model.load_state_dict(tensors)
