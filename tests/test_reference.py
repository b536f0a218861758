"""Nonlinear generators against a plain reference written from DESIGN.md §2.

The reference below implements the stage loop directly (numpy.einsum over letter strings, a
small breadth-first search for connected groups) and does not use adntn_lab's planner or
executor; only the cores, their index names and stages are read from the generator.
"""

from __future__ import annotations

import math
import string
from collections import Counter, deque

import numpy as np
import pytest
from designs import CUSTOM

import adntn_lab as al

_erf = np.vectorize(math.erf)

SIGMA = {
    "identity": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),  # PyTorch's default slope
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}



def contract_all(operands):
    """Contract ``[(inds, array), ...]`` to one tensor; open indices appear once."""
    counts = Counter(ix for inds, _ in operands for ix in inds)
    out = []
    for inds, _ in operands:
        out += [ix for ix in inds if counts[ix] == 1 and ix not in out]
    letters = {}
    for inds, _ in operands:
        for ix in inds:
            letters.setdefault(ix, string.ascii_letters[len(letters)])
    eq = ",".join("".join(letters[ix] for ix in inds) for inds, _ in operands)
    eq += "->" + "".join(letters[ix] for ix in out)
    return tuple(out), np.einsum(eq, *(a for _, a in operands), optimize="greedy")


def connected_groups(items):
    """Connected components (lists of positions) of items that share an index, by BFS."""
    seen, groups = set(), []
    for start in range(len(items)):
        if start in seen:
            continue
        comp, queue = [], deque([start])
        seen.add(start)
        while queue:
            i = queue.popleft()
            comp.append(i)
            for j in range(len(items)):
                if j not in seen and set(items[i][0]) & set(items[j][0]):
                    seen.add(j)
                    queue.append(j)
        groups.append(sorted(comp))
    return groups


def reference_weight(gen, sigmas, params=None):
    """W from the stage definition: ``front`` loop, groups, sigma per group, crop."""
    params = gen.params if params is None else params
    front = []  # (inds, array)
    for s in range(gen.num_stages):
        stage = [(c.inds, np.asarray(params[n])) for n, c in gen.cores.items() if c.stage == s]
        if not stage:
            continue
        stage_inds = {ix for inds, _ in stage for ix in inds}
        touching = [f for f in front if stage_inds & set(f[0])]
        front = [f for f in front if not stage_inds & set(f[0])]
        items = stage + touching
        for comp in connected_groups(items):
            assert any(i < len(stage) for i in comp)
            inds, arr = contract_all([items[i] for i in comp])
            front.append((inds, sigmas[s](arr)))
    assert len(front) == 1
    inds, wp = front[0]
    tz = gen.tensorization
    wp = wp.transpose([inds.index(p) for p in tz.physical_inds])
    return crop_mixed_radix(wp, tz)


def crop_mixed_radix(wp, tz):
    """(O', I') from the physical tensor: reshape each leg to (o_k, i_k), rows first, crop."""
    n = tz.n_sites
    split = wp.reshape([x for o, i in zip(tz.out_modes, tz.in_modes) for x in (o, i)])
    rows_first = split.transpose(list(range(0, 2 * n, 2)) + list(range(1, 2 * n, 2)))
    full = rows_first.reshape(math.prod(tz.out_modes), math.prod(tz.in_modes))
    return full[: tz.out_features, : tz.in_features]


def expected_activated(family, num_stages):
    """Stages that carry sigma, from DESIGN.md §2."""
    if family in ("ttn", "attn", "brickwall"):
        return set(range(1, num_stages - 1))  # not the leaves/vectors, not the root/last layer
    return set(range(num_stages - 1))  # mera: every level but the last; custom: all but last


CASES = [
    ("ttn", 60, 100, {"n_sites": 4, "bond_dim": 3}),
    ("ttn", 10, 784, {"n_sites": 5, "bond_dim": 3}),
    ("ttn-lateral", 33, 17, {"n_sites": 8, "bond_dim": 2, "lateral": True}),
    ("attn", 60, 100, {"bond_dim": 2}),
    ("attn", 33, 17, {"n_sites": 6, "bond_dim": 3}),
    ("mera", 60, 100, {"n_sites": 8, "bond_dim": 3}),
    ("mera-lateral", 33, 17, {"n_sites": 8, "bond_dim": 2, "lateral": True}),
    ("brickwall", 33, 17, {"depth": 3, "pattern": "staircase"}),
    ("brickwall", 10, 12, {"depth": 4, "pattern": "brickwall"}),
    ("brickwall", 16, 16, {"depth": 2, "pattern": "brickwall"}),
]


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}")
def test_nonlinear_family_equals_stage_reference(case, act):
    name, out_f, in_f, options = case
    family = name.split("-")[0]
    gen = al.build(family, in_f, out_f, activation=act, seed=7, **options)
    activated = expected_activated(family, gen.num_stages)
    assert activated, "the case must have a nonlinear stage"
    assert [s.activation.name for s in gen.stages] == [
        act if s in activated else "identity" for s in range(gen.num_stages)]
    sigmas = [SIGMA[act] if s in activated else SIGMA["identity"]
              for s in range(gen.num_stages)]
    W = gen.weight()
    ref = reference_weight(gen, sigmas)
    np.testing.assert_allclose(W, ref, rtol=1e-10, atol=1e-12)
    # the activation matters: the linear reading of the same cores differs
    linear = reference_weight(gen, [SIGMA["identity"]] * gen.num_stages)
    assert not np.allclose(W, linear, rtol=1e-3, atol=1e-6)
    # and torch computes the same
    torch = pytest.importorskip("torch")
    Wt = gen.weight(backend="torch", dtype=torch.float64)
    np.testing.assert_allclose(Wt.numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("act", ["leaky_relu", "gelu", "silu"])
def test_other_activations_equal_stage_reference(act):
    torch = pytest.importorskip("torch")
    gen = al.build("ttn", 30, 20, n_sites=4, bond_dim=3, activation=act, seed=3)
    sigmas = [SIGMA["identity"], SIGMA[act], SIGMA["identity"]]
    ref = reference_weight(gen, sigmas)
    np.testing.assert_allclose(gen.weight(), ref, rtol=1e-10, atol=1e-12)
    Wt = gen.weight(backend="torch", dtype=torch.float64)
    np.testing.assert_allclose(Wt.numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_custom_three_stage_graph_equals_stage_reference(act):
    gen = al.from_graph(CUSTOM, activation=act, seed=2)
    assert gen.num_stages == 3
    assert [s.activation.name for s in gen.stages] == [act, act, "identity"]
    sigmas = [SIGMA[act], SIGMA[act], SIGMA["identity"]]
    np.testing.assert_allclose(gen.weight(), reference_weight(gen, sigmas), rtol=1e-10,
                               atol=1e-12)
    # per-stage activations given as a list
    gen2 = al.from_graph(CUSTOM, activation=["tanh", "relu", "identity"], seed=2)
    sig2 = [SIGMA["tanh"], SIGMA["relu"], SIGMA["identity"]]
    np.testing.assert_allclose(gen2.weight(), reference_weight(gen2, sig2), rtol=1e-10,
                               atol=1e-12)


def test_custom_groups_by_hand():
    """The custom design written out: stage 0 has groups {a,b}, {c}, {d}; d waits a stage."""
    gen = al.from_graph(CUSTOM, activation="tanh", seed=5)
    P = gen.params
    c = gen.cores
    sig = np.tanh

    def axes(name, *inds):
        return [c[name].inds.index(ix) for ix in inds]

    # index names of each bond, found from the two cores that hold it
    def bond(u, v):
        (ix,) = set(c[u].inds) & set(c[v].inds)
        return ix

    ab, am, bm, cn = bond("a", "b"), bond("a", "m"), bond("b", "m"), bond("c", "n")
    mt, nt, dt = bond("m", "t"), bond("n", "t"), bond("d", "t")
    A = P["a"].transpose(axes("a", "p0", ab, am))        # (d0, 3, 2)
    B = P["b"].transpose(axes("b", "p1", ab, bm))        # (d1, 3, 2)
    C = P["c"].transpose(axes("c", "p2", cn))            # (d2, 3)
    D = P["d"].transpose(axes("d", "p3", dt))            # (d3, 3)
    M = P["m"].transpose(axes("m", am, bm, mt))          # (2, 2, 2)
    N = P["n"].transpose(axes("n", cn, nt))              # (3, 2)
    T = P["t"].transpose(axes("t", mt, nt, dt))          # (2, 2, 3)
    X_ab = sig(np.einsum("ikx,jky->ijxy", A, B))          # stage 0, group {a, b}
    X_c = sig(C)                                         # stage 0, group {c}
    X_d = sig(D)                                         # stage 0, group {d}
    X_m = sig(np.einsum("ijxy,xyz->ijz", X_ab, M))       # stage 1, group {m, X_ab}
    X_n = sig(np.einsum("kw,wv->kv", X_c, N))             # stage 1, group {n, X_c}
    Wp = np.einsum("ijz,kv,lu,zvu->ijkl", X_m, X_n, X_d, T)  # stage 2, linear
    np.testing.assert_allclose(gen.weight(), crop_mixed_radix(Wp, gen.tensorization),
                               rtol=1e-10, atol=1e-12)


def _leaf(gen, k):
    (name,) = [n for n, c in gen.cores.items() if f"p{k}" in c.inds]
    return name


def _parent(gen, child):
    """The core in a later stage that holds the child's last (parent) bond."""
    bond = gen.cores[child].inds[-1]
    (name,) = [n for n, c in gen.cores.items() if bond in c.inds and n != child]
    return name


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_four_site_ttn_by_hand(act):
    chi = 3
    gen = al.build("ttn", 10, 20, bond_dim=chi, activation=act, seed=11,
                   out_modes=(2, 3, 2, 2), in_modes=(3, 2, 2, 1))
    sig = SIGMA[act]
    U = [gen.params[_leaf(gen, k)] for k in range(4)]
    for k, u in enumerate(U):  # U_k in R^{d_k x chi}, physical leg first
        assert u.shape == (gen.tensorization.site_dims[k], chi)
        assert gen.cores[_leaf(gen, k)].inds[0] == f"p{k}"
    ga, gb = _parent(gen, _leaf(gen, 0)), _parent(gen, _leaf(gen, 2))
    assert _parent(gen, _leaf(gen, 1)) == ga and _parent(gen, _leaf(gen, 3)) == gb
    root = _parent(gen, ga)
    assert _parent(gen, gb) == root and gen.cores[root].kind == "root"
    # G_v[alpha, beta, gamma]: children's bonds first (left, right), parent bond last
    assert gen.cores[ga].inds[:2] == (gen.cores[_leaf(gen, 0)].inds[1],
                                      gen.cores[_leaf(gen, 1)].inds[1])
    assert gen.cores[gb].inds[:2] == (gen.cores[_leaf(gen, 2)].inds[1],
                                      gen.cores[_leaf(gen, 3)].inds[1])
    assert gen.cores[root].inds == (gen.cores[ga].inds[2], gen.cores[gb].inds[2])
    GA, GB, R = gen.params[ga], gen.params[gb], gen.params[root]

    X_a = sig(np.einsum("ia,jb,abg->ijg", U[0], U[1], GA))   # Z_v then sigma
    X_b = sig(np.einsum("ka,lb,abg->klg", U[2], U[3], GB))
    Wp = np.einsum("ija,klb,ab->ijkl", X_a, X_b, R)          # root: no activation
    # W'[row, col]: row digits (o_0..o_3), column digits (i_0..i_3), first most significant
    om, im = (2, 3, 2, 2), (3, 2, 2, 1)
    W_full = np.zeros((24, 12))
    for r in range(24):
        o = np.unravel_index(r, om)
        for col in range(12):
            i = np.unravel_index(col, im)
            W_full[r, col] = Wp[tuple(o[k] * im[k] + i[k] for k in range(4))]
    np.testing.assert_allclose(gen.weight(), W_full[:20, :10], rtol=1e-10, atol=1e-12)


def test_three_site_ttn_by_hand():
    """An unbalanced tree: ((0, 1), 2); the lone leaf meets the root directly."""
    chi = 2
    gen = al.build("ttn", 12, 8, bond_dim=chi, activation="tanh", seed=1,
                   out_modes=(2, 2, 2), in_modes=(3, 2, 2))
    U = [gen.params[_leaf(gen, k)] for k in range(3)]
    g = _parent(gen, _leaf(gen, 0))
    assert _parent(gen, _leaf(gen, 1)) == g
    root = _parent(gen, g)
    assert _parent(gen, _leaf(gen, 2)) == root
    assert gen.cores[root].inds == (gen.cores[g].inds[2], gen.cores[_leaf(gen, 2)].inds[1])
    X = np.tanh(np.einsum("ia,jb,abg->ijg", U[0], U[1], gen.params[g]))
    Wp = np.einsum("ija,kb,ab->ijk", X, U[2], gen.params[root])
    np.testing.assert_allclose(gen.weight(), crop_mixed_radix(Wp, gen.tensorization),
                               rtol=1e-10, atol=1e-12)


def test_reference_agrees_with_quimb_when_linear():
    """Sanity of the reference itself: with every sigma the identity it is quimb's contraction."""
    gen = al.build("mera", 30, 20, n_sites=8, bond_dim=2, activation="identity")
    tz = gen.tensorization
    t = gen.tn.contract(output_inds=tz.physical_inds).transpose(*tz.physical_inds).data
    ref = reference_weight(gen, [SIGMA["identity"]] * gen.num_stages)
    np.testing.assert_allclose(ref, tz.to_matrix(t), rtol=1e-10, atol=1e-12)
