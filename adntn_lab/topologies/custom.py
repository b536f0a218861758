"""Custom generators from a networkx graph or a JSON description (format ``adntn-graph/1``).

A core is a node with a ``stage`` (int) and optionally ``sites`` (the physical legs it carries),
``kind``, ``constant`` with a ``value``, and ``x``/``y`` for drawing. A bond is an edge with a
``dim``. Every site ``0..N-1`` must be carried by exactly one core.
"""

from __future__ import annotations

import json
import math

import numpy as np

from ..tensorize import tensorize
from ._blueprint import Blueprint, Builder

__all__ = ["from_graph", "graph_to_blueprint", "generator_to_dict", "FORMAT"]

FORMAT = "adntn-graph/1"


def _as_dict(graph) -> dict:
    """Normalise a networkx graph, a JSON string or a dict into the JSON dict form."""
    if isinstance(graph, dict):
        return graph
    if isinstance(graph, (str, bytes)):
        try:
            return json.loads(graph)
        except json.JSONDecodeError as err:
            raise ValueError(f"could not read the graph JSON: {err}") from None
    try:
        import networkx as nx
    except ImportError:  # pragma: no cover - networkx is a dependency
        nx = None
    if nx is not None and isinstance(graph, nx.Graph):
        cores, bonds = [], []
        for name, attrs in graph.nodes(data=True):
            if "stage" not in attrs:
                continue
            core = {"name": str(name), **{k: v for k, v in attrs.items()}}
            if "site" in core and "sites" not in core:
                core["sites"] = [core.pop("site")]
            cores.append(core)
        names = {c["name"] for c in cores}
        for u, v, attrs in graph.edges(data=True):
            for end in (u, v):
                if str(end) not in names:
                    other = v if end == u else u
                    raise ValueError(
                        f"bond {u}–{v} is dangling: {end!r} is not a core (it has no 'stage'); "
                        f"give {end!r} a stage or remove the bond from {other!r}"
                    )
            bonds.append({"u": str(u), "v": str(v), **attrs})
        out = {"cores": cores, "bonds": bonds}
        out.update({k: v for k, v in graph.graph.items()})
        return out
    raise TypeError(
        f"graph must be a networkx graph, a dict or a JSON string, not {type(graph).__name__}"
    )


def graph_to_blueprint(graph, in_features=None, out_features=None, *, out_modes=None,
                       in_modes=None) -> Blueprint:
    """Validate a custom description and turn it into a :class:`Blueprint`."""
    spec = _as_dict(graph)
    cores = spec.get("cores")
    if not cores:
        raise ValueError("the graph has no cores; add at least one node with a 'stage'")
    in_features = in_features if in_features is not None else spec.get("in_features")
    out_features = out_features if out_features is not None else spec.get("out_features")
    out_modes = out_modes if out_modes is not None else spec.get("out_modes")
    in_modes = in_modes if in_modes is not None else spec.get("in_modes")
    if in_features is None or out_features is None:
        raise ValueError("give in_features and out_features (arguments or graph attributes)")
    names = [str(c.get("name", "")) for c in cores]
    if any(not n for n in names):
        raise ValueError("every core needs a non-empty 'name'")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"core names must be unique; repeated: {dup}")
    carried: dict[int, list[str]] = {}
    for c in cores:
        stage = c.get("stage")
        if isinstance(stage, bool) or not isinstance(stage, (int, np.integer)) or stage < 0:
            raise ValueError(f"core {c['name']!r} needs a non-negative integer 'stage', "
                             f"got {stage!r}")
        for s in c.get("sites", []) or []:
            carried.setdefault(int(s), []).append(str(c["name"]))
    n_sites = len(out_modes) if out_modes is not None else (
        len(in_modes) if in_modes is not None else (max(carried) + 1 if carried else 0))
    if n_sites == 0:
        raise ValueError("no core carries a physical leg; mark the sites each core carries, "
                         "e.g. 'sites': [0]")
    for k in range(n_sites):
        owners = carried.get(k, [])
        if not owners:
            raise ValueError(f"physical leg of site {k} is missing: no core carries site {k}; "
                             f"add {k} to one core's 'sites'")
        if len(owners) > 1:
            raise ValueError(f"physical leg of site {k} is doubled: cores {owners} all carry "
                             "it; each site belongs to exactly one core")
    extra = sorted(k for k in carried if k >= n_sites or k < 0)
    if extra:
        raise ValueError(f"sites {extra} lie outside 0..{n_sites - 1} (the graph has {n_sites} "
                         "sites)")
    tz = tensorize(out_features, in_features, n_sites=n_sites, out_modes=out_modes,
                   in_modes=in_modes)
    b = Builder(tz)
    legs: dict[str, list[str]] = {n: [] for n in names}
    bond_names = []
    for j, bond in enumerate(spec.get("bonds", []) or []):
        u, v = bond.get("u"), bond.get("v")
        for end in (u, v):
            if end is None or str(end) not in legs:
                raise ValueError(
                    f"bond {j} ({u}–{v}) is dangling: {end!r} is not a core; bonds must join "
                    f"two of {names}"
                )
        if str(u) == str(v):
            raise ValueError(f"bond {j} joins core {u!r} to itself; a bond joins two cores")
        dim = bond.get("dim")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise ValueError(f"bond {j} ({u}–{v}) needs a positive integer 'dim', got {dim!r}")
        ix = b.bond(int(dim))
        bond_names.append(ix)
        legs[str(u)].append(ix)
        legs[str(v)].append(ix)
    stages = [int(c["stage"]) for c in cores]
    for c, name in zip(cores, names):
        inds = legs[name] + [b.physical(int(s)) for s in c.get("sites", []) or []]
        if "legs" in c:  # explicit axis order from to_dict
            order = []
            for leg in c["legs"]:
                order.append(bond_names[leg["bond"]] if "bond" in leg else b.physical(leg["site"]))
            if sorted(order) != sorted(inds):
                raise ValueError(f"core {name!r}: 'legs' does not match its bonds and sites")
            inds = order
        if not inds:
            raise ValueError(f"core {name!r} has no legs; connect it or remove it")
        constant = bool(c.get("constant", False))
        value = c.get("value")
        if constant and value is None:
            raise ValueError(f"constant core {name!r} needs a 'value'")
        shape = tuple(b.dims[ix] for ix in inds)
        if constant and np.asarray(value).size != math.prod(shape):
            raise ValueError(f"constant core {name!r}: value has {np.asarray(value).size} "
                             f"entries, its legs need {math.prod(shape)}")
        pos = (c["x"], c["y"]) if "x" in c and "y" in c else None
        b.core(name, inds, int(c["stage"]), str(c.get("kind", "core")), constant=constant,
               value=value, pos=pos)
    num_stages = max(stages) + 1
    bp = b.blueprint("custom", num_stages, set(range(num_stages - 1)))
    bp.options["params"] = {c["name"]: c["params"] for c in cores if "params" in c}
    bp.options["activation"] = spec.get("activation")
    return bp


def from_graph(graph, in_features=None, out_features=None, *, out_modes=None, in_modes=None,
               activation=None, seed: int = 0, optimize="auto", calibrate: bool = True,
               memory_budget=None):
    """Build a :class:`~adntn_lab.Generator` from a drawn or written network.

    Parameters
    ----------
    graph : networkx.Graph, dict or str
        Nodes/cores with ``stage`` and ``sites``; edges/bonds with ``dim`` (see module doc).
    in_features, out_features : int, optional
        Shape of the weight; read from the graph's attributes when not given.
    out_modes, in_modes : sequence of int, optional
        Per-site factors; balanced factors of the features by default.
    activation : str, callable or sequence, optional
        One activation for every stage but the last, or one per stage. Defaults to the graph's
        ``activation`` entry, else ``relu``.
    memory_budget : int or str, optional
        Bytes the network may take to build (see :mod:`adntn_lab.resources`).

    Raises
    ------
    ValueError
        Dangling bond, missing or doubled physical leg, stages that leave more than one
        tensor, and other structural mistakes, each named.
    """
    from ..generator import Generator

    bp = graph_to_blueprint(graph, in_features, out_features, out_modes=out_modes,
                            in_modes=in_modes)
    params = bp.options.pop("params")
    graph_act = bp.options.pop("activation")
    act = activation if activation is not None else graph_act
    if act is None and bp.num_stages > 1:
        act = "relu"
    gen = Generator(bp, act, seed=seed, optimize=optimize, calibrate=calibrate and not params,
                    memory_budget=memory_budget)
    for name, value in params.items():
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != gen.cores[name].shape:
            raise ValueError(f"params of core {name!r} have shape {arr.shape}, expected "
                             f"{gen.cores[name].shape}")
        gen.params[name] = arr
    return gen


def generator_to_dict(gen, include_params: bool = False) -> dict:
    """Describe a generator in the ``adntn-graph/1`` JSON form."""
    owners: dict[str, list[str]] = {}
    for name, c in gen.cores.items():
        for ix in c.inds:
            owners.setdefault(ix, []).append(name)
    bonds, bond_index = [], {}
    for ix, names in owners.items():
        if ix.startswith("p"):
            continue
        bond_index[ix] = len(bonds)
        bonds.append({"u": names[0], "v": names[1], "dim": gen.size_dict[ix]})
    pos = gen.layout()
    cores = []
    for name, c in gen.cores.items():
        entry = {
            "name": name,
            "stage": c.stage,
            "kind": c.kind,
            "constant": c.constant,
            "sites": list(c.sites),
            "shape": list(c.shape),
            "legs": [{"site": int(ix[1:])} if ix.startswith("p") else {"bond": bond_index[ix]}
                     for ix in c.inds],
            "x": float(pos[name][0]),
            "y": float(pos[name][1]),
        }
        if c.constant:
            entry["value"] = np.asarray(gen.params[name]).ravel().tolist()
        if include_params and not c.constant:
            entry["params"] = np.asarray(gen.params[name]).tolist()
        cores.append(entry)
    tz = gen.tensorization
    return {
        "format": FORMAT,
        "family": gen.family,
        "in_features": tz.in_features,
        "out_features": tz.out_features,
        "out_modes": list(tz.out_modes),
        "in_modes": list(tz.in_modes),
        "activation": [a.name for a in gen.activations],
        "cores": cores,
        "bonds": bonds,
    }
