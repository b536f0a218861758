"""The step products' own backward (engine/step_products.py) against autograd's matmul."""

from __future__ import annotations

import pytest
import torch

from adntn_lab.engine import _step_product_function, step_products
from adntn_lab.nn import ADNTNLinear


@pytest.fixture(params=[1, 2, 4, 64])
def every_product(request, monkeypatch):
    """Route every product through the Function, whatever its size (the transposed
    orientation too), with summed gradients accumulated in blocks of this many batches
    (2 and 4 leave a shorter last block for the batches of 5 and 6)."""
    monkeypatch.setattr(step_products, "_MIN_MADDS", 0)
    monkeypatch.setattr(step_products, "_MIN_TRANSPOSED_SIDE", 1)
    monkeypatch.setattr(step_products, "_MAX_BLOCK_BATCHES", request.param)


def _reference(a, b):
    return torch.matmul(a.expand(b.shape[0], *a.shape[1:]), b)


# (a batch, b batch, m, k, n): a repeated over b's batch (gradient summed, in both
# orientations), one matrix each (the transposed-orientation weight gradient), batched
@pytest.mark.parametrize("nb_a, nb, m, k, n", [
    (1, 5, 3, 7, 4), (1, 6, 9, 2, 5), (1, 1, 11, 3, 2), (1, 1, 2, 3, 11), (4, 4, 3, 5, 2),
])
def test_gradients_match_autograd_matmul(every_product, nb_a, nb, m, k, n):
    torch.manual_seed(0)
    a = torch.randn(nb_a, m, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(nb, k, n, dtype=torch.float64, requires_grad=True)
    out = step_products.product(a, b, broadcast=nb_a != nb)
    assert out.grad_fn is not None and "StepProduct" in type(out.grad_fn).__name__
    grad = torch.randn_like(out)
    ga, gb = torch.autograd.grad(out, (a, b), grad)
    ref = _reference(a, b)
    ra, rb = torch.autograd.grad(ref, (a, b), grad)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, ra, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb, rb, rtol=1e-12, atol=1e-12)
    assert ga.shape == a.shape and gb.shape == b.shape


@pytest.mark.parametrize("nb_a, nb", [(1, 4), (1, 1), (3, 3)])
def test_gradcheck_and_second_order(every_product, nb_a, nb):
    torch.manual_seed(1)
    a = torch.randn(nb_a, 3, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(nb, 5, 6, dtype=torch.float64, requires_grad=True)

    def fn(x, y):
        return step_products.product(x, y, broadcast=nb_a != nb)

    assert torch.autograd.gradcheck(fn, (a, b))
    assert torch.autograd.gradgradcheck(fn, (a, b))


def test_only_one_operand_needs_a_gradient(every_product):
    a = torch.randn(1, 4, 3, requires_grad=True)
    b = torch.randn(6, 3, 5)
    out = step_products.product(a, b, broadcast=True)
    (ga,) = torch.autograd.grad(out.sum(), (a,))
    torch.testing.assert_close(ga, torch.autograd.grad(_reference(a, b).sum(), (a,))[0])


def test_plain_product_where_the_function_does_not_pay():
    a = torch.randn(1, 4, 3, requires_grad=True)
    b = torch.randn(6, 3, 5)
    assert "StepProduct" not in type(step_products.product(a, b, True).grad_fn).__name__
    with torch.no_grad():
        assert step_products.product(a, b, True).grad_fn is None


def test_autocast_takes_the_plain_product(every_product):
    a = torch.randn(1, 4, 3, requires_grad=True)
    b = torch.randn(6, 3, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = step_products.product(a, b, True)
    assert out.dtype == torch.bfloat16
    assert "StepProduct" not in type(out.grad_fn).__name__


def _layer_gradients(layer, x):
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    layer(x).square().sum().backward()
    return [x.grad] + [p.grad for p in layer.parameters()]


@pytest.mark.parametrize("topology, kw", [("ttn", dict(bond_dim=8)), ("mera", dict(bond_dim=4))])
def test_fused_layer_gradients_equal_autograds(monkeypatch, topology, kw):
    """A fused training step at a size where the Function runs, beside the plain products."""
    torch.manual_seed(2)
    layer = ADNTNLinear(1024, 1024, topology=topology, schedule="fused", dtype=torch.float64,
                        **kw)
    x = torch.randn(256, 1024, dtype=torch.float64)
    calls = []
    original = _step_product_function.StepProduct.apply

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(_step_product_function.StepProduct, "apply", counting)
    ours = _layer_gradients(layer, x)
    assert calls, "no product of this layer went through the step products' backward"
    monkeypatch.setattr(step_products, "_MIN_MADDS", 1 << 62)
    calls.clear()
    plain = _layer_gradients(layer, x)
    assert not calls
    for g, r in zip(ours, plain, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def _small_compiled_setup(monkeypatch):
    monkeypatch.setattr(step_products, "_MIN_MADDS", 0)
    monkeypatch.setattr(step_products, "_MIN_TRANSPOSED_SIDE", 1)
    monkeypatch.setattr(step_products, "_MAX_BLOCK_BATCHES", 2)
    torch._dynamo.reset()
    torch.manual_seed(3)
    return ADNTNLinear(64, 64, topology="ttn", bond_dim=4, schedule="fused",
                       dtype=torch.float64)


def test_compiled_graph_holds_the_function(monkeypatch):
    layer = _small_compiled_setup(monkeypatch)
    graphs = []

    def recording(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    compiled = torch.compile(layer, fullgraph=True, backend=recording)
    compiled(torch.randn(5, 64, dtype=torch.float64)).sum().backward()
    assert len(graphs) == 1 and "autograd_function_apply" in graphs[0]


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_layer_runs_the_function_for_any_batch(monkeypatch, backend):
    """Under ``torch.compile(fullgraph=True)`` the Function is traced too, for a batch that
    turns symbolic on the third size, and matches eager (which sums in blocks of two)."""
    layer = _small_compiled_setup(monkeypatch)
    compiled = torch.compile(layer, fullgraph=True, backend=backend)
    for batch in (5, 3, 7, 11):
        x = torch.randn(batch, 64, dtype=torch.float64)
        ours = _layer_gradients(compiled, x)
        eager = _layer_gradients(layer, x)
        for g, r in zip(ours, eager, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11)
