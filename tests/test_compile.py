"""torch.compile(layer, fullgraph=True): one graph, forward and backward, equal to eager.

``fullgraph=True`` turns any graph break into an error, so every case below also checks that
planning and dispatch stay outside the traced region. Most cases trace with the
``aot_eager`` backend (Dynamo and AOTAutograd, forward and backward graphs, without code
generation, which is slow on a small CPU); one case runs the default Inductor backend.
"""

from __future__ import annotations

import pytest
import torch
from designs import CUSTOM

import adntn_lab as al
from adntn_lab.nn import ADNTNLinear


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each layer is its own graph (its structure is part of it), and Dynamo allows a code
    object only so many graphs: start every test from an empty cache."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


FAMILIES = [
    ("ttn", dict(bond_dim=2)),
    ("attn", dict(bond_dim=2)),
    ("mera", dict(bond_dim=2)),
    ("brickwall", dict(depth=2)),
    ("mpo", dict(bond_dim=2)),
    ("lowrank", dict(rank=2)),
    ("custom", {}),
]


def _layer(family, options, schedule, *, in_features=16, out_features=12):
    if family == "custom":
        gen = al.from_graph(CUSTOM)
        return ADNTNLinear(gen.in_features, gen.out_features, generator=gen,
                           schedule=schedule, dtype=torch.float64)
    return ADNTNLinear(in_features, out_features, topology=family, schedule=schedule,
                       dtype=torch.float64, **options)


def _output_and_grads(layer, x):
    params = [p for p in layer.parameters() if p.requires_grad]
    y = layer(x)
    probe = torch.linspace(-1.0, 1.0, y.numel(), dtype=y.dtype).view_as(y)
    grads = torch.autograd.grad((y * probe).sum(), params)
    return y.detach(), grads


def _assert_compiled_equals_eager(layer, compiled, x):
    y_c, g_c = _output_and_grads(compiled, x)
    y_e, g_e = _output_and_grads(layer, x)
    torch.testing.assert_close(y_c, y_e, rtol=1e-10, atol=1e-12)
    assert len(g_c) == len(g_e) > 0
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("schedule", ["materialize", "fused"])
@pytest.mark.parametrize("family,options", FAMILIES, ids=[f for f, _ in FAMILIES])
def test_fullgraph_compile_matches_eager(family, options, schedule):
    layer = _layer(family, options, schedule)
    assert layer.generator.activations[-1].is_identity  # fused is valid for every family
    torch.manual_seed(0)
    x = torch.randn(5, layer.in_features, dtype=torch.float64)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    _assert_compiled_equals_eager(layer, compiled, x)


def test_fullgraph_compile_runs_gate_chains():
    """A brick-wall layer large enough for its layers to run as blocks of gates."""
    layer = _layer("brickwall", dict(depth=2), "materialize", in_features=256, out_features=64)
    assert any(c is not None for c in layer.generator.program.chains)
    x = torch.randn(3, 256, dtype=torch.float64)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    _assert_compiled_equals_eager(layer, compiled, x)


@pytest.mark.parametrize("schedule", ["auto", "fused"])
def test_compiled_layer_follows_the_batch_size(schedule):
    """New batch sizes recompile, the third with a symbolic batch; the fused plan reads
    the batch off the input, so every size gives eager's result."""
    layer = _layer("ttn", dict(bond_dim=2), schedule)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    for batch in (5, 3, 7, 11):
        x = torch.randn(batch, layer.in_features, dtype=torch.float64)
        _assert_compiled_equals_eager(layer, compiled, x)
    x = torch.randn(2, 3, layer.in_features, dtype=torch.float64)  # leading dimensions
    _assert_compiled_equals_eager(layer, compiled, x)


def test_inductor_compiles_the_layer():
    layer = ADNTNLinear(16, 12, topology="ttn", bond_dim=2)
    x = torch.randn(4, 16)
    compiled = torch.compile(layer, fullgraph=True)
    y_c, g_c = _output_and_grads(compiled, x)
    y_e, g_e = _output_and_grads(layer, x)
    torch.testing.assert_close(y_c, y_e, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_explain_counts_no_graph_break():
    layer = _layer("mera", dict(bond_dim=2), "auto")
    x = torch.randn(4, layer.in_features, dtype=torch.float64)
    explained = torch._dynamo.explain(layer)(x)
    assert explained.graph_break_count == 0
    assert explained.graph_count == 1


def test_lean_backward_is_refused_inside_compile():
    layer = _layer("brickwall", dict(depth=2), "materialize")
    layer.generated.recompute = "lean"
    x = torch.randn(3, layer.in_features, dtype=torch.float64)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="recompute='lean'"):
        compiled(x)
    y = layer(x)  # eagerly the lean pass runs
    assert "Lean" in type(layer.weight.grad_fn).__name__
    y.sum().backward()


def test_the_cupy_bridge_is_refused_inside_compile():
    from adntn_lab.engine.cupy_backend import contract_weight

    layer = _layer("ttn", dict(bond_dim=2), "materialize")
    program, arrays = layer.generator.program, layer.generated.arrays()
    compiled = torch.compile(lambda: contract_weight(program, arrays), fullgraph=True,
                             backend="aot_eager")
    with pytest.raises(Exception, match="compile the layer itself"):
        compiled()
    torch.testing.assert_close(contract_weight(program, arrays), layer.weight)


def test_the_engine_marks_trace_constants_as_torch_does():
    """The engine marks its planning functions without importing torch; the mark must be
    the one torch.compiler.assume_constant_result sets."""
    from adntn_lab.engine.arrays import trace_constant

    def ours():
        return 1

    def theirs():
        return 1

    trace_constant(ours)
    torch.compiler.assume_constant_result(theirs)
    assert vars(ours) == vars(theirs) != {}
