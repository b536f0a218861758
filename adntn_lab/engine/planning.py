"""Stage groups and their cotengra contraction trees.

A generator's execution is fixed by its structure: which cores sit in which stage and which
indices they share. :func:`plan_structure` simulates the stage semantics symbolically once and
returns the groups to contract, each with a cotengra tree found once per structure and reused
(an in-process cache keyed by the group's canonical signature, plus cotengra's on-disk cache
for hyper-optimised trees when :func:`set_plan_cache` names a directory). Entries of the disk
cache are written to a temporary file and moved into place with :func:`os.replace`, so
processes sharing the directory (sweep workers, data-parallel ranks) never read half an entry.
"""

from __future__ import annotations

import math
import pickle
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass

import cotengra as ctg
from cotengra.utils import DiskDict

from ..topologies._blueprint import CoreSpec
from ..utils import write_and_replace

__all__ = [
    "GroupPlan",
    "Plan",
    "OPTIMIZERS",
    "plan_structure",
    "contraction_tree",
    "set_plan_cache",
    "plan_cache_info",
    "clear_plan_cache",
]

OPTIMIZERS = ("auto", "greedy", "optimal", "hyper")

_TREES: dict = {}
_LOCK = threading.Lock()
_STATS = Counter()
_DISK_DIR: str | None = None


def set_plan_cache(directory: str | None) -> None:
    """Keep hyper-optimised contraction trees on disk in ``directory`` (``None`` turns it off)."""
    global _DISK_DIR
    _DISK_DIR = None if directory is None else str(directory)


def plan_cache_info() -> dict:
    """Hits, misses and size of the in-process tree cache."""
    return {"hits": _STATS["hits"], "misses": _STATS["misses"], "size": len(_TREES)}


def clear_plan_cache() -> None:
    """Forget every cached tree and reset the hit/miss counters (the on-disk cache stays)."""
    with _LOCK:
        _TREES.clear()
        _STATS.clear()


class AtomicDiskDict(DiskDict):
    """cotengra's on-disk dict whose files appear complete or not at all.

    cotengra writes an entry in place, so a reader in another process may find the file
    before its last byte is written; here each entry is written to a temporary file in the
    same directory and renamed over the target.
    """

    __slots__ = ()

    def __setitem__(self, k, v):
        self._mem_cache[k] = v
        if self._directory is None:
            return
        parts = k if isinstance(k, tuple) else (k,)
        fname = self._path.joinpath(*parts)
        fname.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{fname.name}.", suffix=".tmp", dir=fname.parent)
        write_and_replace(fd, tmp, fname, pickle.dumps(v))


class _DiskReusableOptimizer(ctg.ReusableHyperOptimizer):
    """cotengra's reusable hyper-optimiser over an :class:`AtomicDiskDict`."""

    def __init__(self, *, directory, **kwargs):
        super().__init__(directory=directory, **kwargs)
        self._cache = AtomicDiskDict(directory)


_AUTO = None
#: operations per second against which the "auto" search budget is set (see _optimizer)
AUTO_SEARCH_RATE = 1e10


def _optimizer(optimize):
    global _AUTO
    if optimize is None or optimize == "auto":
        # no process pool: generators are also built inside worker processes (sweeps).
        # cotengra's search runs until it has spent the contraction's own time at
        # AUTO_SEARCH_RATE operations per second; its default (1e9, a slow core) spends
        # seconds on a paper-size layer for trees no faster than what a tenth of that finds
        if _AUTO is None:
            _AUTO = ctg.AutoOptimizer(parallel=False, max_time=f"rate:{AUTO_SEARCH_RATE:g}")
        return _AUTO
    if optimize in ("greedy", "optimal"):
        return optimize
    if optimize == "hyper":
        kwargs = dict(max_repeats=32, progbar=False, parallel=False)
        if _DISK_DIR:
            return _DiskReusableOptimizer(directory=_DISK_DIR, **kwargs)
        return ctg.HyperOptimizer(**kwargs)
    if isinstance(optimize, str):
        raise ValueError(f"unknown optimizer {optimize!r}; use one of {OPTIMIZERS} "
                         "or pass a cotengra optimizer object")
    return optimize  # a cotengra optimizer the user configured


def _canonical(inputs, output, size_dict):
    labels: dict[str, int] = {}
    for term in (*inputs, output):
        for ix in term:
            labels.setdefault(ix, len(labels))
    sym = ctg.get_symbol
    c_in = tuple(tuple(sym(labels[ix]) for ix in term) for term in inputs)
    c_out = tuple(sym(labels[ix]) for ix in output)
    sizes = tuple(size_dict[ix] for ix in labels)
    return c_in, c_out, sizes


# one element read or written costs about as much time as this many multiply-adds (CPU/GPU
# memory bandwidth against arithmetic throughput, in round numbers)
TRAFFIC = 8.0
# contractions summing over fewer elements than this run below peak arithmetic rate
_FULL_RATE_EXTENT = 32.0


def roofline_score(tree) -> float:
    """Estimated run time of a tree, in multiply-add units.

    Each pairwise step costs its multiply-adds at a rate that grows with the extent summed
    over (a 4x4 gate applied to a large state is memory bound, a 64x64 block is not), plus the
    elements it reads and writes.
    """
    score = 0.0
    for node, left, right in tree.traverse():
        madds = float(tree.get_flops(node))
        out = float(tree.get_size(node))
        extent = madds / max(out, 1.0)
        rate = min(1.0, extent / _FULL_RATE_EXTENT)
        score += madds / rate + TRAFFIC * (tree.get_size(left) + tree.get_size(right) + out)
    return score


def block_path(inputs, size_dict, max_block: int, min_state: int = 1 << 14):
    """SSA path that first merges neighbouring small tensors (gates) into blocks of at most
    ``max_block`` elements, then applies the blocks one by one to the single large tensor.

    Returns None when the group is not one large tensor plus small ones.
    """
    sizes = [math.prod(size_dict[ix] for ix in term) for term in inputs]
    big = max(range(len(sizes)), key=sizes.__getitem__)
    if sizes[big] < min_state or any(s > max_block for k, s in enumerate(sizes) if k != big):
        return None
    path, blocks = [], []
    nxt = len(inputs)
    cur, cur_inds = None, None
    for k, term in enumerate(inputs):
        if k == big:
            continue
        inds = set(term)
        if cur is not None and cur_inds & inds and math.prod(
                size_dict[ix] for ix in cur_inds ^ inds) <= max_block:
            path.append((cur, k))
            cur, cur_inds = nxt, cur_inds ^ inds
            nxt += 1
            continue
        if cur is not None:
            blocks.append(cur)
        cur, cur_inds = k, inds
    if cur is not None:
        blocks.append(cur)
    state = big
    for b in blocks:
        path.append((state, b))
        state = nxt
        nxt += 1
    return path


def _best_tree(c_in, c_out, sd, optimize):
    """cotengra's tree, or a gate-blocking tree when the roofline model prefers it."""
    tree = ctg.array_contract_tree(c_in, c_out, sd, optimize=_optimizer(optimize))
    if optimize not in (None, "auto") or len(c_in) < 3:
        return tree
    best, best_score = tree, roofline_score(tree)
    greedy = ctg.array_contract_tree(c_in, c_out, sd, optimize="greedy")
    if roofline_score(greedy) < best_score:
        best, best_score = greedy, roofline_score(greedy)
    for max_block in (16, 64, 256, 1024, 4096, 16384):  # 16: one 2x2x2x2 gate at a time
        path = block_path(c_in, sd, max_block)
        if path is None:
            break
        cand = ctg.ContractionTree.from_path(c_in, c_out, sd, ssa_path=path)
        score = roofline_score(cand)
        if score < best_score:
            best, best_score = cand, score
    return best


def contraction_tree(inputs, output, size_dict, optimize="auto") -> ctg.ContractionTree:
    """The cotengra tree for one group, cached by canonical signature and optimizer.

    Parameters
    ----------
    inputs : sequence of tuple of str
        Indices of each operand.
    output : tuple of str
        Indices of the result, in order.
    size_dict : dict
        Dimension of every index.
    optimize : str or cotengra optimizer
        ``"auto"`` (cotengra's preset), ``"greedy"``, ``"optimal"``, ``"hyper"`` or an object.
    """
    okey = optimize if isinstance(optimize, str) or optimize is None else id(optimize)
    return _cached_tree(inputs, output, size_dict, okey,
                        lambda c_in, c_out, sd: _best_tree(c_in, c_out, sd, optimize))


def tree_from_path(inputs, output, size_dict, ssa_path) -> ctg.ContractionTree:
    """A cotengra tree that follows a given SSA path, cached like :func:`contraction_tree`."""
    return _cached_tree(
        inputs, output, size_dict, ("path", tuple(map(tuple, ssa_path))),
        lambda c_in, c_out, sd: ctg.ContractionTree.from_path(c_in, c_out, sd,
                                                              ssa_path=ssa_path),
    )


def _cached_tree(inputs, output, size_dict, how, make) -> ctg.ContractionTree:
    """Look a tree up by the group's canonical signature and ``how`` it was made, or make it
    with ``make(canonical_inputs, canonical_output, canonical_sizes)``."""
    c_in, c_out, sizes = _canonical(inputs, output, size_dict)
    key = (c_in, c_out, sizes, how)
    with _LOCK:
        tree = _TREES.get(key)
        if tree is not None:
            _STATS["hits"] += 1
            return tree
        _STATS["misses"] += 1
    tree = make(c_in, c_out, {ctg.get_symbol(i): d for i, d in enumerate(sizes)})
    with _LOCK:
        _TREES[key] = tree
    return tree


@dataclass
class GroupPlan:
    """One connected group of one stage, contracted to one tensor and then activated.

    Attributes
    ----------
    stage, group : int
        Stage index and the group's position within the stage.
    operands : tuple of str
        Core names or front keys (outputs of earlier groups), in contraction-input order.
    inputs : tuple of tuple of str
        Indices of each operand.
    output : tuple of str
        Indices of the group's result.
    key : str
        Front key under which the result is stored (``"X{stage}.{group}"``).
    stage_cores : tuple of str
        Cores of this stage inside the group.
    """

    stage: int
    group: int
    operands: tuple[str, ...]
    inputs: tuple[tuple[str, ...], ...]
    output: tuple[str, ...]
    key: str
    stage_cores: tuple[str, ...]

    def tree(self, size_dict, optimize="auto") -> ctg.ContractionTree:
        return contraction_tree(self.inputs, self.output, size_dict, optimize)


@dataclass
class Plan:
    """All groups of a generator in execution order, and the final tensor's indices.

    Attributes
    ----------
    groups : list of GroupPlan
    final_key : str
        Front key of the last group's result.
    final_inds : tuple of str
        Its indices (the physical legs).
    size_dict : dict of str -> int
    num_stages : int
    constants : tuple of str
        Cores that are not trainable (boundary vectors).
    """

    groups: list[GroupPlan]
    final_key: str
    final_inds: tuple[str, ...]
    size_dict: dict[str, int]
    num_stages: int
    constants: tuple[str, ...] = ()


def check_indices(cores: list[CoreSpec], physical: tuple[str, ...]) -> None:
    """Every bond joins exactly two cores and every physical leg sits on exactly one core."""
    where: dict[str, list[str]] = {}
    for c in cores:
        for ix in c.inds:
            where.setdefault(ix, []).append(c.name)
    phys = set(physical)
    for ix in physical:
        owners = where.get(ix, [])
        if not owners:
            raise ValueError(
                f"physical leg {ix} (site {ix[1:]}) is on no core; mark exactly one core as "
                f"carrying site {ix[1:]}"
            )
        if len(owners) > 1:
            raise ValueError(
                f"physical leg {ix} (site {ix[1:]}) is on {len(owners)} cores {owners}; each "
                "site must be carried by exactly one core"
            )
    for ix, owners in where.items():
        if ix in phys:
            continue
        if len(owners) == 1:
            raise ValueError(
                f"bond {ix} of core {owners[0]} is dangling (it joins no other core); connect "
                "it to a second core or remove it"
            )
        if len(owners) > 2:
            raise ValueError(
                f"bond {ix} joins {len(owners)} cores {owners}; a bond must join exactly two"
            )


def _finder(parent: list[int]):
    """Union-find root lookup with path halving over ``parent``."""

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    return find


def plan_structure(cores: list[CoreSpec], size_dict: dict[str, int], num_stages: int,
                   physical: tuple[str, ...]) -> Plan:
    """Simulate the stage semantics on index sets and return the groups to contract.

    Raises
    ------
    ValueError
        If a bond dangles, a physical leg is missing or doubled, or the stages leave more than
        one tensor at the end.
    """
    check_indices(cores, physical)
    phys = set(physical)
    site_order = {ix: k for k, ix in enumerate(physical)}
    front: dict[str, tuple[str, ...]] = {}
    groups: list[GroupPlan] = []
    for s in range(num_stages):
        stage_cores = [c for c in cores if c.stage == s]
        if not stage_cores:
            continue
        items = [(c.name, c.inds, True) for c in stage_cores]
        ind_of_stage = {ix for c in stage_cores for ix in c.inds}
        items += [(k, inds, False) for k, inds in front.items() if ind_of_stage & set(inds)]
        # union-find over items sharing an index
        parent = list(range(len(items)))
        find = _finder(parent)
        first_seen: dict[str, int] = {}
        for i, (_, inds, _) in enumerate(items):
            for ix in inds:
                if ix in first_seen:
                    parent[find(i)] = find(first_seen[ix])
                else:
                    first_seen[ix] = i
        comps: dict[int, list[int]] = {}
        for i in range(len(items)):
            comps.setdefault(find(i), []).append(i)
        for g, members in enumerate(sorted(comps.values(), key=min)):
            ops = [items[i] for i in members]
            counts = Counter(ix for _, inds, _ in ops for ix in inds)
            output = []
            for _, inds, _ in ops:
                for ix in inds:
                    if counts[ix] == 1 and ix not in output:
                        output.append(ix)
            # bonds first, then physical legs in site order: the final tensor then needs no
            # transposition before it is reshaped into W
            output.sort(key=lambda ix: (ix in phys, site_order.get(ix, 0)))
            key = f"X{s}.{g}"
            groups.append(GroupPlan(
                stage=s,
                group=g,
                operands=tuple(name for name, _, _ in ops),
                inputs=tuple(inds for _, inds, _ in ops),
                output=tuple(output),
                key=key,
                stage_cores=tuple(name for name, _, is_core in ops if is_core),
            ))
            for name, _, is_core in ops:
                if not is_core:
                    del front[name]
            front[key] = tuple(output)
    if len(front) != 1:
        parts = "; ".join(f"{k} with legs {v}" for k, v in front.items())
        raise ValueError(
            f"the stages leave {len(front)} tensors at the end ({parts}); connect them with a "
            "bond in a later stage, or put their cores in one connected stage"
        )
    (final_key, final_inds), = front.items()
    missing = phys - set(final_inds)
    if missing or set(final_inds) - phys:
        raise ValueError(
            f"the final tensor has legs {final_inds}, expected the physical legs {physical}"
        )
    return Plan(groups, final_key, final_inds, dict(size_dict), num_stages,
                tuple(c.name for c in cores if c.constant))
