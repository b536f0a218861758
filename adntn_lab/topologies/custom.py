"""Custom generators from a networkx graph or a JSON description (format ``adntn-graph/1``).

A core is a node with a ``stage`` (int) and optionally ``sites`` (the physical legs it carries),
``kind``, ``constant`` with a ``value``, and ``x``/``y`` for drawing. A bond is an edge with a
``dim``. Every site ``0..N-1`` must be carried by exactly one core.

The description is read strictly, never guessed at: numbers must be JSON integers where
integers are meant (not floats, strings or booleans), every field must be one this format
knows, every bond joins exactly two cores, networkx node identities are kept (nodes ``5`` and
``"5"`` are two nodes, and so are refused as one name), and nesting is bounded. Every refusal
is a ValueError (a wrong value) or TypeError (a wrong type) that names the field by its path
in the description, e.g. ``cores[2].sites[0]``, and says what would be valid.

This module reads and writes the format only; :func:`adntn_lab.from_graph` (in
:mod:`adntn_lab.generator`) builds the generator, so nothing here imports it.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..tensorize import tensorize
from ._blueprint import Blueprint, Builder

__all__ = ["graph_to_blueprint", "generator_to_dict", "FORMAT", "MAX_NESTING"]

FORMAT = "adntn-graph/1"
#: deepest nesting of lists and objects accepted in a description (a core's ``params`` nest
#: once per axis, so this also bounds the number of legs of one core)
MAX_NESTING = 64

_TOP_KEYS = ("format", "family", "name", "description", "in_features", "out_features",
             "out_modes", "in_modes", "activation", "cores", "bonds")
_CORE_KEYS = ("name", "stage", "sites", "kind", "constant", "value", "x", "y", "legs", "shape",
              "params")
_BOND_KEYS = ("u", "v", "dim")


# ----------------------------------------------------------------------------- small checks


def _show(value: Any) -> str:
    kind = {bool: "a boolean", str: "a string", float: "a float", list: "a list",
            tuple: "a tuple", dict: "an object", type(None): "null"}.get(type(value))
    text = repr(value)
    if len(text) > 50:
        text = text[:47] + "..."
    return f"{text} ({kind})" if kind and value is not None else text


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int(path: str, value, *, minimum: int, example: int) -> int:
    """``value`` as an int >= ``minimum``; TypeError for non-integers, ValueError below it."""
    want = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if not _is_int(value):
        raise TypeError(f"{path} must be {want} (e.g. {example}), got {_show(value)}")
    if value < minimum:
        raise ValueError(f"{path} must be {want} (e.g. {example}), got {value}")
    return int(value)


def _sequence(path: str, value, what: str) -> list:
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return value.tolist()  # numpy scalars become Python ones; floats stay floats
    if not isinstance(value, (list, tuple, range)):
        raise TypeError(f"{path} must be a list of {what}, got {_show(value)}")
    return list(value)


def _mapping(path: str, value, what: str) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"{path} must be an object ({what}), got {_show(value)}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{path} has a key {key!r} that is not a string")
    return value


def _known_keys(path: str, d: dict, known: tuple[str, ...], hint: str) -> None:
    for key in d:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            did = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{path} has an unknown field {key!r}{did}; {hint}: "
                             f"{', '.join(known)}")


def _numbers(path: str, value, shape: tuple[int, ...] | None, size: int) -> np.ndarray:
    """A nested list of finite numbers as float64; exactly ``shape``, or ``size`` entries
    in any nesting when ``shape`` is None (depth-bounded, iterative: no recursion)."""
    want = f"shape {list(shape)}" if shape is not None else f"{size} entries"
    if shape is not None and len(shape) == 0:
        if not _is_number(value):
            raise TypeError(f"{path} must be a number, got {_show(value)}")
        flat = [value]
    else:
        flat = []
        stack = [(value, path, 0)]
        while stack:
            item, where, depth = stack.pop()
            if isinstance(item, (list, tuple)):
                if depth >= MAX_NESTING:
                    raise ValueError(f"{path} nests deeper than {MAX_NESTING} levels")
                if shape is not None:
                    if depth >= len(shape) or len(item) != shape[depth]:
                        raise ValueError(f"{where} must be a nested list of {want}, got "
                                         f"{len(item)} entries at depth {depth}")
                stack.extend((x, f"{where}[{i}]", depth + 1) for i, x in reversed(
                    list(enumerate(item))))
            elif _is_number(item) and not isinstance(item, complex):
                if shape is not None and depth != len(shape):
                    raise ValueError(f"{where} must be a list of {shape[depth]} entries "
                                     f"(the core has {want}), got a number")
                if not math.isfinite(float(item)):
                    raise ValueError(f"{where} must be a finite number, got {item!r}")
                flat.append(float(item))
            elif isinstance(item, np.ndarray) and item.dtype.kind in "iuf":
                stack.append((item.tolist(), where, depth))
            else:
                raise TypeError(f"{where} must be a number, got {_show(item)}")
    if len(flat) != size:
        raise ValueError(f"{path} has {len(flat)} numbers; the core's legs need {size} "
                         f"({want})")
    arr = np.asarray(flat, dtype=np.float64)
    return arr.reshape(shape) if shape is not None else arr


# ----------------------------------------------------------------------------- reading input


def _nesting_depth(text: str) -> int:
    """Deepest bracket nesting of JSON text, skipping string contents."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _parse_json(text: str, origin: str) -> Any:
    if _nesting_depth(text) > MAX_NESTING:
        raise ValueError(f"{origin} nests deeper than {MAX_NESTING} levels; an adntn-graph "
                         "design needs only a few (cores, bonds, params)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"could not read the graph JSON ({origin}): {err}") from None


def _read_source(graph) -> tuple[dict, list[str], list[str]]:
    """The description as a dict, with the path of every core and bond for messages."""
    if isinstance(graph, dict):
        spec = graph
    elif isinstance(graph, (os.PathLike, str, bytes)):
        if isinstance(graph, bytes):
            try:
                graph = graph.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("the graph JSON bytes are not UTF-8 text") from None
        path = Path(graph) if isinstance(graph, os.PathLike) else None
        if path is None and not graph.lstrip().startswith(("{", "[")) and len(graph) < 4096:
            candidate = Path(graph)
            try:
                if candidate.is_file():
                    path = candidate
            except (OSError, ValueError):
                pass
        if path is not None:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise ValueError(f"could not read the graph file {path}: {err}") from None
            spec = _parse_json(text, str(path))
        else:
            spec = _parse_json(graph, "text")
        if not isinstance(spec, dict):
            raise TypeError(
                f"the graph JSON must be an object with 'cores' and 'bonds', got "
                f"{_show(spec)}"
            )
    else:
        nx = _networkx()
        if nx is not None and isinstance(graph, nx.Graph):
            return _from_networkx(graph)
        raise TypeError(
            "graph must be a networkx graph, a dict or a JSON string (or the path of a JSON "
            f"file), not {type(graph).__name__}"
        )
    _mapping("the graph", spec, "a design with 'cores' and 'bonds'")
    cores = spec.get("cores")
    bonds = spec.get("bonds")
    n_cores = len(cores) if isinstance(cores, list) else 0
    n_bonds = len(bonds) if isinstance(bonds, list) else 0
    return (spec, [f"cores[{i}]" for i in range(n_cores)],
            [f"bonds[{j}]" for j in range(n_bonds)])


def _networkx():
    try:
        import networkx as nx
    except ImportError:  # pragma: no cover - networkx is a dependency
        return None
    return nx


def _from_networkx(graph) -> tuple[dict, list[str], list[str]]:
    """Nodes with a ``stage`` become cores named ``str(node)``; edges become bonds."""
    cores, core_paths, name_of = [], [], {}
    owner_of_name: dict[str, Any] = {}
    for node, attrs in graph.nodes(data=True):
        if "stage" not in attrs:
            continue
        name = node if isinstance(node, str) else str(node)
        where = f"node {node!r}"
        if name in owner_of_name:
            raise ValueError(
                f"nodes {owner_of_name[name]!r} and {node!r} would both be core {name!r}; "
                "give every node a distinct name (5 and '5' are different nodes)"
            )
        owner_of_name[name] = node
        name_of[node] = name
        if "name" in attrs:
            raise ValueError(f"{where} has a 'name' attribute; the node itself names the core")
        core = {"name": name, **attrs}
        if "site" in core:
            if "sites" in core:
                raise ValueError(f"{where} has both 'site' and 'sites'; give one")
            core["sites"] = [core.pop("site")]
        cores.append(core)
        core_paths.append(where)
    bonds, bond_paths = [], []
    for u, v, attrs in graph.edges(data=True):
        for end, other in ((u, v), (v, u)):
            if end not in name_of:
                raise ValueError(
                    f"bond {u!r}–{v!r} is dangling: {end!r} is not a core (it has no 'stage'); "
                    f"give {end!r} a stage or remove the bond from {other!r}"
                )
        for key in ("u", "v"):
            if key in attrs:
                raise ValueError(f"edge {u!r}–{v!r} has a {key!r} attribute; the edge's own "
                                 "ends are its cores")
        bonds.append({"u": name_of[u], "v": name_of[v], **attrs})
        bond_paths.append(f"edge {u!r}–{v!r}")
    spec = {**dict(graph.graph), "cores": cores, "bonds": bonds}
    return spec, core_paths, bond_paths


# ----------------------------------------------------------------------------- validation


def _modes(path: str, value, features: int, feature_name: str) -> tuple[int, ...]:
    items = _sequence(path, value, "positive integers (one per site)")
    if not items:
        raise ValueError(f"{path} must list one positive integer per site, got []")
    modes = tuple(_int(f"{path}[{k}]", m, minimum=1, example=2) for k, m in enumerate(items))
    if math.prod(modes) < features:
        raise ValueError(f"{path} {list(modes)} multiply to {math.prod(modes)}, fewer than "
                         f"{feature_name}={features}; give modes whose product is at least "
                         f"{features}")
    return modes


def _root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _stage_check(cores: list[dict], legs: dict[str, list[str]], num_stages: int) -> None:
    """The stage walk of DESIGN §2 on index sets: must end in one tensor."""
    front: list[tuple[list[str], Counter]] = []  # (cores in it, its open indices)
    for s in range(num_stages):
        items = [([c["name"]], Counter(legs[c["name"]])) for c in cores if c["stage"] == s]
        stage_inds = set().union(*(set(inds) for _, inds in items))
        keep = [f for f in front if not (stage_inds & set(f[1]))]
        items += [f for f in front if stage_inds & set(f[1])]
        parent = list(range(len(items)))
        seen: dict[str, int] = {}
        for i, (_, inds) in enumerate(items):
            for ix in inds:
                if ix in seen:
                    parent[_root(parent, i)] = _root(parent, seen[ix])
                else:
                    seen[ix] = i
        groups: dict[int, tuple[list[str], Counter]] = {}
        for i, (names, inds) in enumerate(items):
            g = groups.setdefault(_root(parent, i), ([], Counter()))
            g[0].extend(names)
            g[1].update(inds)
        front = keep + [(names, Counter({ix: 1 for ix, n in inds.items() if n == 1}))
                        for names, inds in groups.values()]
    if len(front) > 1:
        parts = "; ".join(f"one from cores {sorted(names)}" for names, _ in front)
        raise ValueError(
            f"the stages leave {len(front)} tensors at the end ({parts}); connect them with a "
            "bond in a later stage, or put their cores in one connected stage"
        )


def graph_to_blueprint(graph, in_features=None, out_features=None, *, out_modes=None,
                       in_modes=None) -> Blueprint:
    """Validate a custom description and turn it into a :class:`Blueprint`.

    Raises
    ------
    TypeError
        A field of the wrong type (a string or float where an integer is meant, ...).
    ValueError
        A field with a wrong value, an unknown field, or a structural mistake; the message
        names the field by its path (``cores[2].sites[0]``) and says what would be valid.
    """
    spec, core_paths, bond_paths = _read_source(graph)
    _known_keys("the graph", spec, _TOP_KEYS, "a design has the fields")
    if "format" in spec and spec["format"] != FORMAT:
        raise ValueError(f"format must be {FORMAT!r}, got {_show(spec['format'])}")
    for key in ("family", "name", "description"):
        if key in spec and not isinstance(spec[key], str):
            raise TypeError(f"{key} must be a string (it is only informative), got "
                            f"{_show(spec[key])}")
    cores = spec.get("cores")
    if cores is None or (isinstance(cores, list) and not cores):
        raise ValueError("the graph has no cores; add at least one node with a 'stage'")
    cores = _sequence("cores", cores, "core objects")
    bonds = _sequence("bonds", spec.get("bonds", []) or [], "bond objects")

    def feature(name, given):
        if given is not None:
            return _int(f"{name} (argument)", given, minimum=1, example=784)
        if spec.get(name) is None:
            raise ValueError("give in_features and out_features (arguments or graph "
                             "attributes)")
        return _int(name, spec[name], minimum=1, example=784)

    in_f, out_f = feature("in_features", in_features), feature("out_features", out_features)
    if out_modes is not None:
        out_m = _modes("out_modes (argument)", out_modes, out_f, "out_features")
    elif spec.get("out_modes") is not None:
        out_m = _modes("out_modes", spec["out_modes"], out_f, "out_features")
    else:
        out_m = None
    if in_modes is not None:
        in_m = _modes("in_modes (argument)", in_modes, in_f, "in_features")
    elif spec.get("in_modes") is not None:
        in_m = _modes("in_modes", spec["in_modes"], in_f, "in_features")
    else:
        in_m = None
    if out_m is not None and in_m is not None and len(out_m) != len(in_m):
        raise ValueError(f"out_modes and in_modes must have one entry per site: got "
                         f"{len(out_m)} and {len(in_m)} entries")

    # cores: names, stages, sites
    entries = []
    carried: dict[int, list[tuple[str, str]]] = {}
    names: set[str] = set()
    for i, c in enumerate(cores):
        where = core_paths[i] if i < len(core_paths) else f"cores[{i}]"
        c = _mapping(where, c, "a core with 'name' and 'stage'")
        _known_keys(where, c, _CORE_KEYS, "a core has the fields")
        name = c.get("name")
        if not isinstance(name, str):
            raise TypeError(f"{where}.name must be a non-empty string, got {_show(name)}")
        if not name:
            raise ValueError(f"{where}.name must be a non-empty string; every core needs a "
                             "non-empty 'name'")
        if name in names:
            raise ValueError(f"{where}.name: core names must be unique; repeated: [{name!r}]")
        names.add(name)
        if "stage" not in c:
            raise ValueError(f"{where} (core {name!r}) needs a non-negative integer 'stage'")
        try:
            stage = _int(f"{where}.stage", c["stage"], minimum=0, example=0)
        except (TypeError, ValueError) as err:
            raise type(err)(f"core {name!r} needs a non-negative integer 'stage': {err}") \
                from None
        sites = _sequence(f"{where}.sites", c.get("sites", []) or [], "site numbers")
        own = []
        for k, s in enumerate(sites):
            site = _int(f"{where}.sites[{k}]", s, minimum=0, example=0)
            if site in own:
                raise ValueError(f"{where}.sites lists site {site} twice; physical leg of "
                                 f"site {site} is doubled")
            own.append(site)
            carried.setdefault(site, []).append((name, f"{where}.sites[{k}]"))
        if "kind" in c and not isinstance(c["kind"], str):
            raise TypeError(f"{where}.kind must be a string, got {_show(c['kind'])}")
        if "constant" in c and not isinstance(c["constant"], bool):
            raise TypeError(f"{where}.constant must be true or false, got "
                            f"{_show(c['constant'])}")
        if ("x" in c) != ("y" in c):
            raise ValueError(f"{where} gives only one of 'x' and 'y'; give both or neither")
        for key in ("x", "y"):
            if key in c and not (_is_number(c[key]) and math.isfinite(c[key])):
                raise TypeError(f"{where}.{key} must be a finite number, got {_show(c[key])}")
        entries.append({"name": name, "stage": stage, "sites": own, "raw": c, "path": where})

    used = {e["stage"] for e in entries}
    num_stages = 0
    while num_stages in used:
        num_stages += 1
    if len(used) != num_stages:
        shown = sorted(used)[:10]
        raise ValueError(f"stages must be numbered 0..S-1 without gaps; no core has stage "
                         f"{num_stages} (stages used: {shown}{' ...' if len(used) > 10 else ''})")

    if out_m is not None:
        n_sites, by = len(out_m), "one per entry of out_modes"
    elif in_m is not None:
        n_sites, by = len(in_m), "one per entry of in_modes"
    else:
        n_sites, by = (max(carried) + 1 if carried else 0), "the largest site carried, plus 1"
    if n_sites == 0:
        raise ValueError("no core carries a physical leg; mark the sites each core carries, "
                         "e.g. 'sites': [0]")
    for site in sorted(carried):
        if site >= n_sites:
            raise ValueError(f"{carried[site][0][1]} is site {site}, which does not exist: the "
                             f"graph has {n_sites} sites (0..{n_sites - 1}, {by})")
    for k in range(n_sites):
        owners = carried.get(k, [])
        if not owners:
            raise ValueError(f"physical leg of site {k} is missing: no core carries site {k}; "
                             f"add {k} to one core's 'sites'")
        if len(owners) > 1:
            raise ValueError(f"physical leg of site {k} is doubled: cores "
                             f"{[o for o, _ in owners]} all carry it; each site belongs to "
                             "exactly one core")

    tz = tensorize(out_f, in_f, n_sites=n_sites, out_modes=out_m, in_modes=in_m)
    b = Builder(tz)

    # bonds
    legs: dict[str, list[str]] = {e["name"]: [] for e in entries}
    bond_of_core: dict[str, list[int]] = {e["name"]: [] for e in entries}
    bond_names = []
    for j, bond in enumerate(bonds):
        where = bond_paths[j] if j < len(bond_paths) else f"bonds[{j}]"
        bond = _mapping(where, bond, "a bond with 'u', 'v' and 'dim'")
        _known_keys(where, bond, _BOND_KEYS,
                    "a bond joins exactly two cores and has the fields")
        u, v = bond.get("u"), bond.get("v")
        for key, end in (("u", u), ("v", v)):
            if end is None:
                raise ValueError(f"{where} ({u}–{v}) is dangling: it has no {key!r}; bonds "
                                 f"must join two of {sorted(names)}")
            if not isinstance(end, str):
                raise TypeError(f"{where}.{key} must be the name (a string) of a core, got "
                                f"{_show(end)}")
            if end not in legs:
                raise ValueError(
                    f"{where}.{key}: bond {j} ({u}–{v}) is dangling: {end!r} is not a core; "
                    f"bonds must join two of {sorted(names)}"
                )
        if u == v:
            raise ValueError(f"{where}: bond {j} joins core {u!r} to itself; a bond joins two "
                             "cores")
        if "dim" not in bond:
            raise ValueError(f"{where} ({u}–{v}) needs a positive integer 'dim'")
        try:
            dim = _int(f"{where}.dim", bond["dim"], minimum=1, example=2)
        except (TypeError, ValueError) as err:
            raise type(err)(f"bond {j} ({u}–{v}) needs a positive integer 'dim': {err}") \
                from None
        ix = b.bond(dim)
        bond_names.append(ix)
        for end in (u, v):
            legs[end].append(ix)
            bond_of_core[end].append(j)

    # axis order, shapes, values
    params: dict[str, np.ndarray] = {}
    for e in entries:
        c, name, where = e["raw"], e["name"], e["path"]
        inds = legs[name] + [b.physical(s) for s in e["sites"]]
        if "legs" in c:  # explicit axis order, as written by to_dict
            order = []
            for k, leg in enumerate(_sequence(f"{where}.legs", c["legs"], "leg objects")):
                lw = f"{where}.legs[{k}]"
                leg = _mapping(lw, leg, "{'bond': j} or {'site': k}")
                if len(leg) != 1 or next(iter(leg)) not in ("bond", "site"):
                    raise ValueError(f"{lw} must be {{'bond': j}} or {{'site': k}}, got "
                                     f"{_show(leg)}")
                if "bond" in leg:
                    j = _int(f"{lw}.bond", leg["bond"], minimum=0, example=0)
                    if j >= len(bonds):
                        raise ValueError(f"{lw}.bond is {j}, but there are {len(bonds)} bonds "
                                         f"(0..{len(bonds) - 1})")
                    if j not in bond_of_core[name]:
                        raise ValueError(f"{lw}.bond is {j}, a bond that does not touch core "
                                         f"{name!r} (its bonds: {bond_of_core[name]})")
                    order.append(bond_names[j])
                else:
                    s = _int(f"{lw}.site", leg["site"], minimum=0, example=0)
                    if s not in e["sites"]:
                        raise ValueError(f"{lw}.site is {s}, a site core {name!r} does not "
                                         f"carry (its sites: {e['sites']})")
                    order.append(b.physical(s))
            if sorted(order) != sorted(inds):
                raise ValueError(f"{where}.legs: core {name!r}: 'legs' does not match its "
                                 "bonds and sites; list each of its bonds and sites once")
            inds = order
        if not inds:
            raise ValueError(f"{where}: core {name!r} has no legs; connect it or remove it")
        shape = tuple(b.dims[ix] for ix in inds)
        if "shape" in c:
            given = _sequence(f"{where}.shape", c["shape"], "integers")
            given = [_int(f"{where}.shape[{k}]", d, minimum=1, example=2)
                     for k, d in enumerate(given)]
            if tuple(given) != shape:
                raise ValueError(f"{where}.shape is {given}, but the core's legs give "
                                 f"{list(shape)}")
        constant = bool(c.get("constant", False))
        value = None
        if constant:
            if c.get("value") is None:
                raise ValueError(f"{where}: constant core {name!r} needs a 'value'")
            value = _numbers(f"{where}.value", c["value"], None, math.prod(shape))
        elif "value" in c:
            raise ValueError(f"{where}.value is given but core {name!r} is not constant; "
                             "set 'constant': true or drop 'value'")
        if "params" in c:
            if constant:
                raise ValueError(f"{where}.params: constant core {name!r} takes its 'value', "
                                 "not 'params'")
            params[name] = _numbers(f"{where}.params", c["params"], shape, math.prod(shape))
        pos = (float(c["x"]), float(c["y"])) if "x" in c else None
        kind = c.get("kind", "core")
        b.core(name, inds, e["stage"], kind, constant=constant, value=value, pos=pos)
        legs[name] = list(inds)

    _stage_check(entries, legs, num_stages)
    activation = _activation_entry(spec.get("activation"), num_stages)
    bp = b.blueprint("custom", num_stages, set(range(num_stages - 1)))
    bp.options["params"] = params
    bp.options["activation"] = activation
    return bp


def _activation_entry(value, num_stages: int):
    """The graph's own ``activation`` entry, checked: None, a name, or one name per stage."""
    from ..activations import get_activation

    if value is None:
        return None
    if isinstance(value, str):
        items, paths = [value], ["activation"]
    elif isinstance(value, list):
        if len(value) != num_stages:
            raise ValueError(f"activation lists {len(value)} names but the graph has "
                             f"{num_stages} stages; give one name per stage or a single name")
        items, paths = value, [f"activation[{k}]" for k in range(len(value))]
    else:
        raise TypeError(f"activation must be a name such as 'relu' or a list of names (one per "
                        f"stage), got {_show(value)}")
    for item, where in zip(items, paths):
        if not isinstance(item, str):
            raise TypeError(f"{where} must be an activation name, got {_show(item)}")
        try:
            get_activation(item)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    return value


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
