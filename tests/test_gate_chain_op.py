"""The gate kernels as torch custom operators: registration checks, float64 gradients, and a
compiled brick-wall that runs them and matches eager."""

import pytest
import torch

pytest.importorskip("numba")

from adntn_lab.engine import gate_chain_op, gate_kernels  # noqa: E402
from adntn_lab.nn import ADNTNLinear  # noqa: E402

# 6 qubit lines, a staircase and a second sweep: several phases at small chunk sizes
LINES = (0, 1, 2, 3, 4, 2, 0, 1)


def _signature():
    sig = gate_chain_op.kernel_lines((2,) * 6, LINES)
    assert sig == (6, LINES)
    return sig


def _chain_reference(state, gates):
    """The chain gate by gate as einsums: ``new[a', b'] = sum g[a, b, a', b'] old[a, b]`` on
    lines ``p, p + 1`` (line 0 the slowest axis)."""
    x = state
    for g, p in zip(gates.reshape(-1, 2, 2, 2, 2), LINES):
        view = x.reshape(2 ** p, 2, 2, -1)
        x = torch.einsum("abcd,labr->lcdr", g, view).reshape(-1)
    return x


def test_the_operator_applies_the_chain():
    n_lines, lines = _signature()
    gen = torch.Generator().manual_seed(0)
    state = torch.randn(64, dtype=torch.float64, generator=gen)
    gates = torch.randn(len(LINES), 16, dtype=torch.float64, generator=gen)
    out, saved = torch.ops.adntn_lab.gate_chain(state, gates, n_lines, list(lines))
    torch.testing.assert_close(out, _chain_reference(state, gates), rtol=1e-12, atol=1e-12)
    phases = gate_kernels.plan_phases(n_lines, lines)
    assert saved.shape == (len(phases.phases) - 1, 64)


def test_opcheck_and_float64_gradcheck():
    n_lines, lines = _signature()
    gen = torch.Generator().manual_seed(1)
    state = torch.randn(64, dtype=torch.float64, generator=gen, requires_grad=True)
    gates = torch.randn(len(LINES), 16, dtype=torch.float64, generator=gen, requires_grad=True)
    torch.library.opcheck(torch.ops.adntn_lab.gate_chain.default,
                          (state, gates, n_lines, list(lines)))

    def first(s, g):
        return torch.ops.adntn_lab.gate_chain(s, g, n_lines, list(lines))[0]

    assert torch.autograd.gradcheck(first, (state, gates))


def test_a_compiled_brickwall_runs_the_operator_and_matches_eager():
    torch.manual_seed(0)
    layer = ADNTNLinear(256, 256, topology="brickwall")  # 16 lines: its stages are chains
    assert any(c is not None for c in layer.generator.program.chains)
    x = torch.randn(16, 256)
    layer(x).square().sum().backward()
    eager = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(layer, fullgraph=True, backend=backend)
    y = compiled(x)
    y.square().sum().backward()
    assert any("adntn_lab.gate_chain" in str(node.target)
               for gm in graphs for node in gm.graph.nodes)
    torch.testing.assert_close(y, layer(x), rtol=1e-6, atol=1e-7)
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, eager[name], rtol=1e-4, atol=1e-6)


def test_export_keeps_standard_operators():
    torch.manual_seed(0)
    layer = ADNTNLinear(256, 256, topology="brickwall").eval()
    x = torch.randn(4, 256)
    program = torch.export.export(layer, (x,))
    targets = {str(node.target) for node in program.graph.nodes}
    assert not any("adntn_lab" in t for t in targets)
    torch.testing.assert_close(program.module()(x), layer(x), rtol=1e-5, atol=1e-6)
