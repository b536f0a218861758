"""Contraction trees run as pre-laid-out matrix products (adntn_lab.engine.matmul_steps)."""

from __future__ import annotations

import cotengra as ctg
import numpy as np
import pytest

import adntn_lab as al
from adntn_lab.engine.matmul_steps import contract_tree


def _random_network(rng, n_tensors, n_inds, *, hyper=False, trace=False):
    """Random operands sharing indices, with some output indices, sizes 2..4."""
    names = [f"x{k}" for k in range(n_inds)]
    sizes = {ix: int(rng.integers(2, 5)) for ix in names}
    inputs = [list(rng.choice(names, size=int(rng.integers(2, 5)), replace=False))
              for _ in range(n_tensors)]
    if hyper:  # one index in three tensors and the output (a batch index for some steps)
        for term in inputs[:3]:
            if "x0" not in term:
                term.append("x0")
    if trace:  # an index appearing in one tensor only and not in the output
        sizes["lonely"] = 3
        inputs[0].append("lonely")
    counts = {ix: sum(ix in t for t in inputs) for ix in sizes}
    output = [ix for ix in names if counts[ix] == 1] + (["x0"] if hyper else [])
    output = list(dict.fromkeys(output))
    rng.shuffle(output)
    arrays = [rng.standard_normal([sizes[ix] for ix in t]) for t in inputs]
    return [tuple(t) for t in inputs], tuple(output), sizes, arrays


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("kind", ["plain", "hyper", "trace"])
def test_contract_tree_equals_einsum(seed, kind):
    rng = np.random.default_rng(seed)
    inputs, output, sizes, arrays = _random_network(
        rng, 5, 7, hyper=kind == "hyper", trace=kind == "trace")
    tree = ctg.array_contract_tree(inputs, output, sizes, optimize="greedy")
    if tree.N < 2:
        pytest.skip("nothing to contract")
    expect = tree.contract(arrays)
    np.testing.assert_allclose(contract_tree(tree, arrays), expect, rtol=1e-10, atol=1e-10)
    # the plan is cached per tree and gives the same result on the second call
    np.testing.assert_allclose(contract_tree(tree, arrays), expect, rtol=1e-10, atol=1e-10)


def test_contract_tree_gradients_pass_gradcheck():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    inputs, output, sizes, arrays = _random_network(rng, 4, 6, hyper=True)
    tree = ctg.array_contract_tree(inputs, output, sizes, optimize="greedy")
    xs = [torch.tensor(a, requires_grad=True) for a in arrays]
    torch.testing.assert_close(contract_tree(tree, xs), torch.as_tensor(tree.contract(arrays)))
    assert torch.autograd.gradcheck(lambda *x: contract_tree(tree, list(x)), tuple(xs))


def test_large_output_is_written_in_its_final_layout():
    """Two halves joined into a large output whose order keeps each half's indices together
    come out of one matrix product, contiguous, without a transpose of the result."""
    torch = pytest.importorskip("torch")
    left = tuple("hgfedcba") + ("x",)
    right = ("x",) + tuple("ijklmnop")
    output = tuple("abcdefgh") + tuple("ponmlkji")
    sizes = {ix: 2 for ix in left + right}
    sizes["x"] = 4
    tree = ctg.array_contract_tree([left, right], output, sizes, optimize="greedy")
    a, b = torch.randn([sizes[i] for i in left]), torch.randn([sizes[i] for i in right])
    got = contract_tree(tree, [a, b])
    assert got.is_contiguous()
    torch.testing.assert_close(got, torch.einsum("hgfedcbax,xijklmnop->abcdefghponmlkji", a, b))


def test_generator_trees_run_through_the_planned_steps_unchanged():
    """Every family's weight equals quimb's own contraction with the planned steps in use."""
    for family, kw in (("ttn", dict(bond_dim=3)), ("attn", dict(bond_dim=2)),
                       ("mera", dict(bond_dim=2)), ("brickwall", dict(depth=2)),
                       ("mpo", dict(bond_dim=3))):
        gen = al.build(family, 256, 128, activation="identity", **kw)
        tz = gen.tensorization
        expect = tz.to_matrix(gen.tn.contract(output_inds=tz.physical_inds).data)
        np.testing.assert_allclose(gen.weight(), expect, rtol=1e-9, atol=1e-12)


def test_broadcast_products_equal_einsum(monkeypatch):
    """With the size floor lifted and only broadcast policies allowed, products that repeat
    one operand over the other's leading indices are chosen in many random networks; each
    such plan contracts exactly as einsum does, gradients included."""
    torch = pytest.importorskip("torch")
    from adntn_lab.engine import matmul_steps

    monkeypatch.setattr(matmul_steps, "_BROADCAST_MIN", 0)
    monkeypatch.setattr(matmul_steps, "_POLICIES", ((True, False), (True, True)))
    checked = 0
    for seed in range(40):
        inputs, output, sizes, arrays = _random_network(np.random.default_rng(seed), 4, 8)
        tree = ctg.array_contract_tree(inputs, output, sizes, optimize="greedy")
        if tree.N < 2:
            continue
        plan = matmul_steps._plan(tree)  # uncached: the settings above apply
        if not any(st.broadcast for st in plan.steps):
            continue
        checked += 1
        np.testing.assert_allclose(matmul_steps.run_steps(plan, arrays), tree.contract(arrays),
                                   rtol=1e-10, atol=1e-10)
        xs = [torch.tensor(a, requires_grad=True) for a in arrays]
        assert torch.autograd.gradcheck(lambda *x, p=plan: matmul_steps.run_steps(p, list(x)),
                                        tuple(xs))
    assert checked >= 8


def test_fused_tree_root_moves_no_batch_sized_array():
    """The fused schedule of a 4096-wide TTN: the input batch meets one half of the tree in a
    plain product and the other half in a broadcast one, so that no array of batch size is
    transposed (only cores are), and the result equals the materialised weight's."""
    torch = pytest.importorskip("torch")
    from adntn_lab.nn import ADNTNLinear

    torch.manual_seed(0)
    layer = ADNTNLinear(4096, 4096, topology="ttn", bond_dim=4, schedule="fused")
    batch = 64
    plan = layer.generator.program.fused_group(batch).steps
    x_slot = plan.n_inputs - 1
    batch_sized = {x_slot} | {st.node for st in plan.steps if -1 in (st.dims or ())}
    for st in plan.steps:
        assert st.out_perm is None or st.node not in batch_sized
        for slot, (perm, _, _) in ((st.left, st.a), (st.right, st.b)):
            assert perm is None or slot not in batch_sized
    assert any(st.broadcast for st in plan.steps)
    x = torch.randn(batch, 4096)
    with torch.no_grad():
        fused = layer(x)
        layer.schedule = "materialize"
        torch.testing.assert_close(layer(x), fused, rtol=1e-4, atol=1e-5)
