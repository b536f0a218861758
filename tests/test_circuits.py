"""Gate chains: brick-wall layers run as merged gate blocks applied by matrix products."""

import numpy as np
import pytest
import torch

import adntn_lab as al
from adntn_lab.engine.gate_chains import detect_gate_chain
from adntn_lab.engine.program import Program


@pytest.mark.parametrize("pattern", ["staircase", "brickwall"])
@pytest.mark.parametrize("max_block_dim", [4, 16, 64])
def test_chain_equals_pairwise_contraction(pattern, max_block_dim):
    gen = al.build("brickwall", 256, 64, depth=2, pattern=pattern)  # Q = 14 lines
    program = gen.program
    layer = program.groups[-1]
    chain = detect_gate_chain(layer.inputs, layer.output, program.size_dict, max_block_dim)
    assert chain is not None
    rng = np.random.default_rng(0)
    ops = [rng.standard_normal([program.size_dict[ix] for ix in inds]) for inds in layer.inputs]
    reference = program.plan.groups[-1].tree(program.size_dict, "greedy").contract(ops)
    np.testing.assert_allclose(chain.contract(ops), reference, rtol=1e-10, atol=1e-12)
    torch_ops = [torch.as_tensor(op) for op in ops]
    np.testing.assert_allclose(chain.contract(torch_ops).numpy(), reference, rtol=1e-10,
                               atol=1e-12)


def test_generator_uses_chains_and_matches_quimb():
    gen = al.build("brickwall", 256, 64, depth=3, activation="identity")
    assert sum(c is not None for c in gen.program.chains) == 2  # layers 2 and 3
    tz = gen.tensorization
    expected = tz.to_matrix(gen.tn.contract(output_inds=tz.physical_inds).data)
    np.testing.assert_allclose(gen.weight(), expected, rtol=1e-9, atol=1e-12)


def test_chain_gradients_equal_the_pairwise_ones():
    gen = al.build("brickwall", 256, 64, depth=2, activation="tanh")
    names = gen.trainable_names

    pairwise = Program(gen.program.plan, gen.tensorization, gen.activations, gate_chains=False)
    assert any(c is not None for c in gen.program.chains)
    assert all(c is None for c in pairwise.chains)

    def grads(program):
        arrays = {k: torch.tensor(v, requires_grad=k in names) for k, v in gen.params.items()}
        (program.run(arrays) ** 2).sum().backward()
        return [arrays[n].grad.numpy() for n in names]

    for a, b in zip(grads(gen.program), grads(pairwise)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_groups_that_are_not_chains_are_left_to_the_tree():
    gen = al.build("ttn", 1024, 1024, bond_dim=4)
    assert all(c is None for c in gen.program.chains)


def test_partition_covers_every_gate_once_in_order_and_avoids_thin_blocks():
    """The block split is a cost-minimising partition of the gates in application order:
    every gate once, each block within the size cap, and (for the 24-line staircase) no
    block whose trailing dimension is 2, 4 or 8, which the batched product handles badly."""
    from adntn_lab.engine.gate_chains import _block_cost, _partition, _pass_cost

    line_dims = (2,) * 24
    applied = [(k + 1, k) for k in range(23)]  # staircase: gate k on lines (k, k + 1)
    runs = _partition(applied, line_dims, 128)
    assert [g for run in runs for g in run] == applied
    total = 2 ** 24
    for run in runs:
        lo, hi = min(p for _, p in run), max(p + 2 for _, p in run)
        width = 2 ** (hi - lo)
        assert width <= 128
        right = total // (2 ** lo * width)
        assert right == 1 or right >= 16
    # the chosen split is no worse than the simple greedy one (fill blocks up to 64)
    greedy = [applied[i:i + 5] for i in range(0, 23, 5)]

    def cost(split):
        out = 0.0
        for run in split:
            lo, hi = min(p for _, p in run), max(p + 2 for _, p in run)
            out += _block_cost(2 ** (hi - lo), total // (2 ** lo * 2 ** (hi - lo)),
                               _pass_cost())
        return out

    assert cost(runs) <= cost(greedy)


# (left, width, right): each branch of the block matrix's gradient (_block_gram): one side
# 1, a summed batch, the trailing axis folded into the block's columns, and moved first
BLOCK_SHAPES = [(1, 8, 64), (64, 8, 1), (16, 4, 32), (32, 8, 4), (8, 16, 2), (4, 32, 16)]


@pytest.mark.parametrize("left,width,right", BLOCK_SHAPES)
def test_block_product_gradients_pass_gradcheck(left, width, right, monkeypatch):
    """The block product's own backward (one product per gradient) against finite
    differences, float64, through every branch of the matrix gradient."""
    torch = pytest.importorskip("torch")
    from adntn_lab.engine import gate_chains

    monkeypatch.setattr(gate_chains, "_GRAM_BATCH_MAX", 1 << 12)  # small batches only
    monkeypatch.setattr(gate_chains, "_WIDE_GRAM_MAX", 32)
    product = gate_chains._block_product("cpu")
    gen = torch.Generator().manual_seed(left * 1000 + width * 10 + right)
    matrix = torch.randn(width, width, dtype=torch.float64, generator=gen, requires_grad=True)
    state = torch.randn(left * width * right, dtype=torch.float64, generator=gen,
                        requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda m, s: product.apply(m, s, left, width, right), (matrix, state))
    # and the forward is the einsum it stands for
    expect = torch.einsum("ab,xbr->xar", matrix, state.view(left, width, right))
    torch.testing.assert_close(product.apply(matrix, state, left, width, right).reshape(
        expect.shape), expect)


def test_block_gram_branches_are_all_taken(monkeypatch):
    """The shapes above reach every way of computing the gradient (the test is not vacuous)."""
    from adntn_lab.engine import gate_chains

    monkeypatch.setattr(gate_chains, "_GRAM_BATCH_MAX", 1 << 12)
    monkeypatch.setattr(gate_chains, "_WIDE_GRAM_MAX", 32)
    methods = {gate_chains._gram_method(*shape) for shape in BLOCK_SHAPES}
    assert methods == {"rows", "columns", "batch", "folded", "moved"}
