"""Binary tree tensor networks (TTN), augmented TTN (aTTN) and lateral mixers.

Leaves ``U_k`` (stage 0, linear) map physical legs to bonds; an internal node ``v`` at height
``h`` forms ``X_v = sigma_h(sum X_a X_b G_v)`` in stage ``h``; the root ``R`` (chi x chi) closes
the tree in the last stage without activation. aTTN adds boundary disentanglers on the physical
legs of neighbouring sites that lie in different height-1 subtrees; they join the last stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..tensorize import Tensorization
from ..utils import positive_int
from ._blueprint import Blueprint, Builder

__all__ = ["build_ttn", "build_attn"]


@dataclass
class _Node:
    lo: int
    hi: int  # sites lo..hi-1
    height: int
    children: list[_Node] = field(default_factory=list)
    parent: _Node | None = None
    name: str = ""
    bond: str = ""  # bond to the parent


def _tree(lo: int, hi: int) -> _Node:
    if hi - lo == 1:
        return _Node(lo, hi, 0)
    mid = (lo + hi + 1) // 2  # left half takes the extra site
    left, right = _tree(lo, mid), _tree(mid, hi)
    node = _Node(lo, hi, max(left.height, right.height) + 1, [left, right])
    left.parent = right.parent = node
    return node


def _walk(node: _Node):
    for c in node.children:
        yield from _walk(c)
    yield node


def _check_bond_dim(bond_dim) -> int:
    return positive_int("bond_dim", bond_dim)


def _build_tree(tz: Tensorization, chi: int, lateral: bool) -> tuple[Builder, _Node]:
    n = tz.n_sites
    if n < 2:
        raise ValueError(
            f"a tree needs at least 2 sites, got n_sites={n}; pass n_sites>=2 "
            "or modes of length >= 2"
        )
    chi = _check_bond_dim(chi)
    b = Builder(tz)
    root = _tree(0, n)
    nodes = list(_walk(root))
    # bonds to parents
    for v in nodes:
        if v is not root:
            v.bond = b.bond(chi)
    height = root.height
    mixers = []
    if lateral:
        for h in range(1, height):
            level = sorted((v for v in nodes if v.height == h), key=lambda v: v.lo)
            used = set()
            for a, c in zip(level, level[1:]):
                if a.parent is not c.parent and id(a) not in used and id(c) not in used:
                    used.update((id(a), id(c)))
                    mixers.append((h, a, c))
    # a node whose output goes through a mixer writes to a pre-mixer bond
    pre = {}
    for _, a, c in mixers:
        pre[id(a)] = b.bond(chi)
        pre[id(c)] = b.bond(chi)
    internal = 0
    for v in nodes:
        out = pre.get(id(v), v.bond)
        y = float(v.height)
        x = (v.lo + v.hi - 1) / 2.0
        if v.height == 0:
            v.name = f"U{v.lo}"
            b.core(v.name, (b.physical(v.lo), out), 0, "leaf", fan_in=tz.site_dims[v.lo],
                   pos=(x, y))
        elif v is root:
            v.name = "R"
            ins = tuple(c.bond for c in v.children)
            b.core("R", ins, height, "root", fan_in=chi * chi, pos=(x, y))
        else:
            v.name = f"G{internal}"
            internal += 1
            ins = tuple(c.bond for c in v.children)
            b.core(v.name, (*ins, out), v.height, "node", fan_in=chi * chi, pos=(x, y))
    for j, (h, a, c) in enumerate(mixers):
        x = (a.hi - 1 + c.lo) / 2.0
        b.core(f"M{j}", (pre[id(a)], pre[id(c)], a.bond, c.bond), h, "mixer",
               fan_in=chi * chi, pos=(x, h + 0.5))
    return b, root


def build_ttn(tz: Tensorization, *, bond_dim: int = 4, lateral: bool = False) -> Blueprint:
    """Blueprint of a binary TTN over ``tz.n_sites`` sites.

    Parameters
    ----------
    tz : Tensorization
    bond_dim : int
        Uniform bond dimension chi.
    lateral : bool
        Add chi^4 mixers between neighbouring nodes of one level that have different parents.
    """
    b, root = _build_tree(tz, bond_dim, lateral)
    height = root.height
    return b.blueprint("ttn", height + 1, set(range(1, height)), bond_dim=bond_dim,
                       lateral=lateral)


def build_attn(tz: Tensorization, *, bond_dim: int = 4, lateral: bool = False) -> Blueprint:
    """Blueprint of an augmented TTN: a TTN plus boundary disentanglers in the last stage.

    A disentangler ``D_j`` of shape ``(d_j, d_{j+1}, d_j, d_{j+1})`` acts on the physical legs
    of sites ``j`` and ``j+1`` when they lie in different height-1 subtrees; each site takes
    part in at most one disentangler.
    """
    b, root = _build_tree(tz, bond_dim, lateral)
    height = root.height
    leaves = sorted((v for v in _walk(root) if v.height == 0), key=lambda v: v.lo)
    block = [id(v.parent) if v.parent.height == 1 else id(v) for v in leaves]
    used: set[int] = set()
    pairs = []
    for j in range(len(leaves) - 1):
        if block[j] != block[j + 1] and j not in used and j + 1 not in used:
            used.update((j, j + 1))
            pairs.append(j)
    # re-route the leaves' physical legs through the disentanglers
    rename = {}
    for j in pairs:
        for s in (j, j + 1):
            rename[b.physical(s)] = b.bond(tz.site_dims[s])
    cores = []
    for c in b.cores:
        if c.kind == "leaf" and c.inds[0] in rename:
            new_inds = (rename[c.inds[0]], *c.inds[1:])
            cores.append(type(c)(c.name, new_inds, c.shape, c.stage, c.kind, c.constant,
                                 c.fan_in, ()))
        else:
            cores.append(c)
    b.cores = cores
    for j in pairs:
        pj, pk = b.physical(j), b.physical(j + 1)
        dj, dk = tz.site_dims[j], tz.site_dims[j + 1]
        b.core(f"D{j}", (rename[pj], rename[pk], pj, pk), height, "disentangler",
               fan_in=dj * dk, pos=(j + 0.5, -0.5))
    return b.blueprint("attn", height + 1, set(range(1, height)), bond_dim=bond_dim,
                       lateral=lateral)
