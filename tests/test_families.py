"""Every family: linear generators equal quimb's full contraction, structure, parameter
counts (DESIGN.md §2) and the initial scale of W."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
from designs import CUSTOM

import adntn_lab as al

SHAPES = [(60, 100), (10, 784), (33, 17)]  # (out_features, in_features)

# (id, family, options); activation "identity" where the family has activations
FAMILY_CASES = [
    ("ttn", "ttn", {}),
    ("ttn-5sites", "ttn", {"n_sites": 5}),
    ("attn", "attn", {}),
    ("mera", "mera", {}),
    ("mera-8sites", "mera", {"n_sites": 8}),
    ("brickwall-staircase", "brickwall", {"depth": 2, "pattern": "staircase"}),
    ("brickwall-brickwall", "brickwall", {"depth": 3, "pattern": "brickwall"}),
    ("mpo", "mpo", {}),
    ("mpo-4cores", "mpo", {"n_cores": 4}),
    ("lowrank", "lowrank", {"rank": 3}),
    ("ttn-lateral", "ttn", {"lateral": True, "n_sites": 8}),
    ("mera-lateral", "mera", {"lateral": True, "n_sites": 8}),
]
LINEAR_FAMILIES = {"mpo", "lowrank"}

# a small custom design: three stages, several groups per stage, a tensor that waits a stage


def dense_from_physical(t, out_modes, in_modes, out_features, in_features):
    """Padded (O', I') matrix of a physical tensor by the mixed-radix definition, cropped.

    Row ``r``'s digit on site ``k`` is ``(r // prod(out_modes[k+1:])) % out_modes[k]`` (first
    mode most significant), likewise for columns; site ``k``'s leg index is
    ``o_k * in_modes[k] + i_k``.
    """
    rows = np.arange(math.prod(out_modes))
    cols = np.arange(math.prod(in_modes))
    index = []
    for k in range(len(out_modes)):
        o_k = (rows // math.prod(out_modes[k + 1:])) % out_modes[k]
        i_k = (cols // math.prod(in_modes[k + 1:])) % in_modes[k]
        index.append(o_k[:, None] * in_modes[k] + i_k[None, :])
    full = t[tuple(index)]
    assert full.shape == (math.prod(out_modes), math.prod(in_modes))
    return full[:out_features, :in_features]


def build_linear(family, out_f, in_f, options, seed=0):
    act = None if family in LINEAR_FAMILIES else "identity"
    return al.build(family, in_f, out_f, activation=act, seed=seed, **options)


def quimb_check(gen):
    tz = gen.tensorization
    t = gen.tn.contract(output_inds=tz.physical_inds)
    data = t.transpose(*tz.physical_inds).data
    assert data.shape == tz.site_dims
    W = gen.weight()
    assert W.shape == (tz.out_features, tz.in_features)
    np.testing.assert_allclose(W, tz.to_matrix(data), rtol=1e-10, atol=1e-13)
    ours = dense_from_physical(data, tz.out_modes, tz.in_modes, tz.out_features, tz.in_features)
    np.testing.assert_allclose(W, ours, rtol=1e-10, atol=1e-13)
    assert np.std(W) > 0


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", FAMILY_CASES, ids=lambda c: c[0])
def test_identity_generator_equals_quimb_contraction(case, shape):
    _, family, options = case
    gen = build_linear(family, *shape, options)
    assert all(s.activation.name == "identity" for s in gen.stages)
    quimb_check(gen)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_identity_custom_equals_quimb_contraction(shape):
    out_f, in_f = shape
    design = {k: v for k, v in CUSTOM.items() if k not in ("out_modes", "in_modes")}
    gen = al.from_graph(design, in_features=in_f, out_features=out_f, activation="identity")
    assert gen.num_stages == 3
    quimb_check(gen)
    # the design's own modes (padding on the input side)
    quimb_check(al.from_graph(CUSTOM, activation="identity", seed=4))


def test_padding_shapes_really_pad():
    for family, options in [("ttn", {}), ("attn", {}), ("mera", {"n_sites": 8}),
                            ("brickwall", {}), ("mpo", {})]:
        gen = build_linear(family, 60, 100, options)
        tz = gen.tensorization
        assert tz.padded_out * tz.padded_in > 60 * 100, family


def test_quimb_network_tags():
    gen = al.build("brickwall", 16, 8, depth=2)
    tn = gen.tn
    assert len(tn.select_tensors("CONST")) == gen.tensorization.n_sites
    for t in tn.select_tensors("CONST"):
        np.testing.assert_array_equal(t.data, [1.0, 0.0])
        assert "STAGE0" in t.tags
    for s in range(gen.num_stages):
        names = set(gen.stages[s].cores)
        tagged = {next(iter(set(t.tags) & set(gen.cores))) for t in tn.select_tensors(f"STAGE{s}")}
        assert tagged == names
    assert set(gen.trainable_names).isdisjoint(gen.constant_names)
    assert len(gen.trainable_names) == 2 * (gen.tensorization.n_sites - 1)


# ---------------------------------------------------------------------------- structure
def core_graph(gen) -> nx.Graph:
    g = nx.Graph()
    owners = {}
    for name, c in gen.cores.items():
        g.add_node(name)
        for ix in c.inds:
            owners.setdefault(ix, []).append(name)
    for ix, names in owners.items():
        if not ix.startswith("p"):
            assert len(names) == 2, ix
            g.add_edge(*names, ind=ix)
    return g


def owner_of(gen, ind, exclude=None):
    hits = [n for n, c in gen.cores.items() if ind in c.inds and n != exclude]
    assert len(hits) == 1
    return hits[0]


@pytest.mark.parametrize("n_sites", [2, 3, 4, 5, 7, 8])
def test_ttn_is_a_binary_tree_with_stage_per_height(n_sites):
    chi = 3
    gen = al.build("ttn", 40, 30, bond_dim=chi, n_sites=n_sites)
    g = core_graph(gen)
    assert nx.is_tree(g)
    kinds = {n: c.kind for n, c in gen.cores.items()}
    leaves = [n for n in kinds if kinds[n] == "leaf"]
    nodes = [n for n in kinds if kinds[n] == "node"]
    roots = [n for n in kinds if kinds[n] == "root"]
    assert len(leaves) == n_sites and len(nodes) == n_sites - 2 and len(roots) == 1
    root = roots[0]
    assert gen.cores[root].shape == (chi, chi)
    assert gen.cores[root].stage == gen.num_stages - 1
    dims = gen.tensorization.site_dims
    for k in range(n_sites):
        leaf = owner_of(gen, f"p{k}")
        assert leaf in leaves and gen.cores[leaf].shape == (dims[k], chi)
        assert gen.cores[leaf].stage == 0
    # every internal node: children first, parent bond last; stage = tree height
    height = {n: 0 for n in leaves}

    def h(name, parent):
        if name in height:
            return height[name]
        kids = [m for m in g.neighbors(name) if m != parent]
        assert len(kids) == 2
        height[name] = 1 + max(h(m, name) for m in kids)
        return height[name]

    assert h(root, None) == gen.num_stages - 1
    for n in nodes:
        assert gen.cores[n].shape == (chi, chi, chi)
        assert gen.cores[n].stage == height[n]
    acts = [s.activation.name for s in gen.stages]
    assert acts[0] == "identity" and acts[-1] == "identity"
    assert all(a == "relu" for a in acts[1:-1])


def test_brickwall_gate_order_follows_pattern():
    for pattern in ("staircase", "brickwall"):
        depth = 3
        gen = al.build("brickwall", 16, 8, depth=depth, pattern=pattern)
        q = gen.tensorization.n_sites
        vectors = [n for n, c in gen.cores.items() if c.constant]
        assert len(vectors) == q
        # the product-state vector of qubit k starts wire k
        wire = {k: gen.cores[f"v{k}"].inds[0] for k in range(q)}
        pairs = list(range(q - 1)) if pattern == "staircase" else (
            list(range(0, q - 1, 2)) + list(range(1, q - 1, 2)))
        used = set()
        for m in range(1, depth + 1):
            for k in pairs:
                gate = [n for n, c in gen.cores.items()
                        if not c.constant and c.inds[:2] == (wire[k], wire[k + 1])]
                assert len(gate) == 1, (pattern, m, k)
                c = gen.cores[gate[0]]
                assert c.shape == (2, 2, 2, 2) and c.stage == m
                used.add(gate[0])
                wire[k], wire[k + 1] = c.inds[2], c.inds[3]
        assert used == set(gen.trainable_names)
        assert [wire[k] for k in range(q)] == [f"p{k}" for k in range(q)]
        acts = [s.activation.name for s in gen.stages]
        assert acts == ["identity"] + ["relu"] * (depth - 1) + ["identity"]


def test_mera_structure():
    chi = 3
    gen = al.build("mera", 30, 20, bond_dim=chi, n_sites=8)
    kinds = [c.kind for c in gen.cores.values()]
    # 2 levels: isometries 2 + 4, disentanglers 1 + 3, one top tensor
    assert kinds.count("top") == 1 and kinds.count("isometry") == 6
    assert kinds.count("disentangler") == 4
    assert gen.num_stages == 2
    assert [s.activation.name for s in gen.stages] == ["relu", "identity"]
    top = next(c for c in gen.cores.values() if c.kind == "top")
    assert top.shape == (chi, chi) and top.stage == 0
    for c in gen.cores.values():
        if c.kind == "isometry":
            assert len(c.shape) == 3 and c.shape[0] == chi
        if c.kind == "disentangler":
            assert len(c.shape) == 4 and c.shape[:2] == c.shape[2:]
    assert nx.is_connected(core_graph(gen))


# ---------------------------------------------------------------------------- counts
@pytest.mark.parametrize("n_sites,chi", [(2, 3), (3, 4), (4, 2), (5, 3), (8, 2)])
def test_ttn_parameter_count(n_sites, chi):
    gen = al.build("ttn", 100, 60, bond_dim=chi, n_sites=n_sites)
    d = gen.tensorization.site_dims
    assert gen.num_params == sum(dk * chi for dk in d) + (n_sites - 2) * chi**3 + chi**2
    assert gen.compression_ratio == pytest.approx(60 * 100 / gen.num_params)


def test_ttn_lateral_adds_chi4_mixers():
    chi = 3
    plain = al.build("ttn", 100, 60, bond_dim=chi, n_sites=8)
    lat = al.build("ttn", 100, 60, bond_dim=chi, n_sites=8, lateral=True)
    mixers = [c for c in lat.cores.values() if c.kind == "mixer"]
    assert mixers and all(c.shape == (chi,) * 4 for c in mixers)
    assert lat.num_params == plain.num_params + len(mixers) * chi**4


@pytest.mark.parametrize("O,I,depth", [(60, 100, 2), (10, 784, 3), (33, 17, 4), (8, 8, 1)])
def test_brickwall_parameter_count(O, I, depth):
    gen = al.build("brickwall", I, O, depth=depth)
    q = math.ceil(math.log2(O)) + math.ceil(math.log2(I))
    assert gen.num_params == 16 * depth * (q - 1)
    # the product-state vectors are constants, not parameters
    assert len(gen.constant_names) == q
    assert gen.num_params == sum(gen.params[n].size for n in gen.trainable_names)


@pytest.mark.parametrize("n_cores,chi", [(2, 3), (3, 4), (4, 2)])
def test_mpo_parameter_count(n_cores, chi):
    gen = al.build("mpo", 100, 60, bond_dim=chi, n_cores=n_cores)
    d = gen.tensorization.site_dims
    assert len(d) == n_cores
    bonds = [1] + [chi] * (n_cores - 1) + [1]
    assert gen.num_params == sum(bonds[k] * d[k] * bonds[k + 1] for k in range(n_cores))


@pytest.mark.parametrize("O,I,r", [(60, 100, 3), (10, 784, 1), (33, 17, 5)])
def test_lowrank_parameter_count(O, I, r):
    gen = al.build("lowrank", I, O, rank=r)
    assert gen.num_params == r * (O + I)
    W = gen.weight()
    assert np.linalg.matrix_rank(W) == min(r, O, I)


@pytest.mark.parametrize("n_sites", [4, 5, 6, 8])
def test_attn_parameter_count_and_disentanglers(n_sites):
    chi = 2
    gen = al.build("attn", 100, 60, bond_dim=chi, n_sites=n_sites)
    ttn = al.build("ttn", 100, 60, bond_dim=chi, n_sites=n_sites)
    assert gen.tensorization == ttn.tensorization
    d = gen.tensorization.site_dims
    ttn_formula = sum(dk * chi for dk in d) + (n_sites - 2) * chi**3 + chi**2
    assert ttn.num_params == ttn_formula
    g = core_graph(gen)
    # leaf U_k (d_k x chi) of site k; its parent is its one tree neighbour
    leaves = {int(n[1:]): n for n, c in gen.cores.items() if c.kind == "leaf"}
    assert sorted(leaves) == list(range(n_sites))
    parent = {}
    for k, leaf in leaves.items():
        (parent[k],) = [m for m in g.neighbors(leaf) if gen.cores[m].kind != "disentangler"]
        assert gen.cores[leaf].shape == (d[k], chi)

    def height_one(node):
        kids = [m for m in g.neighbors(node) if gen.cores[m].kind == "leaf"]
        return len(kids) == 2

    dis = [c for c in gen.cores.values() if c.kind == "disentangler"]
    assert dis, "aTTN needs at least one boundary disentangler"
    seen = set()
    extra = 0
    for c in dis:
        j, k = sorted(int(ix[1:]) for ix in c.inds if ix.startswith("p"))
        assert k == j + 1 and not ({j, k} & seen)
        seen |= {j, k}
        same_block = parent[j] == parent[k] and height_one(parent[j])
        assert not same_block
        assert c.stage == gen.num_stages - 1
        assert c.size == (d[j] * d[k]) ** 2
        extra += (d[j] * d[k]) ** 2
    assert gen.num_params == ttn_formula + extra
    if n_sites == 4:  # tree ((0,1),(2,3)): one disentangler on sites 1 and 2
        assert [sorted(ix for ix in c.inds if ix.startswith("p")) for c in dis] == [["p1", "p2"]]


def test_constants_are_not_parameters_of_the_layer():
    torch = pytest.importorskip("torch")
    from adntn_lab.nn import ADNTNLinear

    layer = ADNTNLinear(33, 17, topology="brickwall", depth=2, bias=False)
    gen = layer.generator
    n = sum(p.numel() for p in layer.parameters())
    assert n == gen.num_params == 16 * 2 * (gen.tensorization.n_sites - 1)
    names = {k.split(".")[-1] for k, _ in layer.named_parameters()}
    assert names == set(gen.trainable_names)
    assert not names & set(gen.constant_names)
    # the vectors still travel with the layer as buffers
    assert len(list(layer.buffers())) == len(gen.constant_names)
    assert all(not b.requires_grad for b in layer.buffers())
    assert isinstance(layer.weight, torch.Tensor)


# ---------------------------------------------------------------------------- initial scale
NONLINEAR_CASES = [
    ("ttn", {"n_sites": 4}),
    ("attn", {}),
    ("mera", {"n_sites": 8}),
    ("brickwall", {"depth": 3, "pattern": "staircase"}),
    ("brickwall", {"depth": 3, "pattern": "brickwall"}),
    ("ttn", {"lateral": True, "n_sites": 8}),
    ("mera", {"lateral": True, "n_sites": 8}),
]
STD_CASES = (
    [(f, o, a) for f, o in NONLINEAR_CASES for a in al.ACTIVATIONS]
    + [("mpo", {}, None), ("lowrank", {"rank": 4}, None)]
)


@pytest.mark.parametrize("shape", [(60, 100), (10, 784)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", STD_CASES,
                         ids=lambda c: f"{c[0]}-{'-'.join(map(str, c[1].values()))}-{c[2]}")
def test_fresh_weight_std_matches_pytorch_default_init(case, shape):
    torch = pytest.importorskip("torch")
    family, options, act = case
    out_f, in_f = shape
    gen = al.build(family, in_f, out_f, activation=act, seed=3, **options)
    W = gen.weight()
    assert np.all(np.isfinite(W))
    torch.manual_seed(0)
    dense_std = float(torch.nn.Linear(in_f, out_f).weight.detach().std())
    for ref in (dense_std, 1.0 / math.sqrt(3 * in_f)):
        assert abs(float(np.std(W)) / ref - 1.0) < 0.25, (float(np.std(W)), ref)
    # the weight is not degenerate: many distinct values, no constant rows
    assert np.unique(np.round(W, 12)).size > W.size // 4


@pytest.mark.parametrize("act", al.ACTIVATIONS)
def test_fresh_custom_weight_std_matches_pytorch_default_init(act):
    for out_f, in_f in [(12, 20), (40, 90)]:
        design = {k: v for k, v in CUSTOM.items() if k not in ("out_modes", "in_modes")}
        gen = al.from_graph(design, in_features=in_f, out_features=out_f, activation=act)
        ratio = float(np.std(gen.weight())) * math.sqrt(3 * in_f)
        assert abs(ratio - 1.0) < 0.25, (act, out_f, in_f, ratio)


@pytest.mark.parametrize("family,options,shape", [
    ("ttn", {"n_sites": 8}, (10, 30)),
    ("ttn", {"n_sites": 6}, (8, 8)),
    ("mera", {"n_sites": 8}, (4, 16)),
    ("brickwall", {"depth": 3}, (4, 4)),
], ids=["ttn8-10x30", "ttn6-8x8", "mera8-4x16", "brickwall-4x4"])
def test_relu_generators_are_not_dead_at_init(family, options, shape):
    """Small legs make small groups; a ReLU group that is negative everywhere zeroes W and
    its gradients. Every seed must still give W the default-init scale."""
    out_f, in_f = shape
    target = 1.0 / math.sqrt(3 * in_f)
    bad = []
    for seed in range(20):
        W = al.build(family, in_f, out_f, activation="relu", seed=seed, **options).weight()
        if not abs(float(np.std(W)) / target - 1.0) < 0.25:
            bad.append((seed, float(np.std(W))))
    assert not bad, f"seeds with a wrong initial scale (target {target:.4f}): {bad}"


@pytest.mark.parametrize("family", ["ttn", "attn", "mera", "brickwall", "mpo", "lowrank"])
def test_fresh_layer_is_alive_on_non_negative_inputs(family):
    """Inputs after a ReLU have a positive mean; a fresh generated W must still send about half
    of the units either way (a W with a coherent mean would start almost every unit dead)."""
    gen = al.build(family, 400, 120, bond_dim=4)
    w = gen.weight()
    assert abs(w.mean()) < 1e-3 * w.std()
    x = np.random.default_rng(0).uniform(0.0, 1.0, size=(512, 400))
    positive = float(np.mean(x @ w.T > 0))
    assert 0.2 < positive < 0.8, positive


def test_core_scales_are_balanced_for_homogeneous_activations():
    """With ReLU (positively homogeneous) every trainable core gets the same RMS, so that
    optimisers with fixed-size steps move all cores alike; W keeps its calibrated std."""
    gen = al.build("ttn", 400, 120, bond_dim=4, activation="relu")
    rms = [float(np.sqrt(np.mean(gen.params[n] ** 2))) for n in gen.trainable_names]
    np.testing.assert_allclose(rms, rms[0], rtol=1e-9)
    np.testing.assert_allclose(gen.weight().std(), al.default_init_std(400), rtol=1e-6)
