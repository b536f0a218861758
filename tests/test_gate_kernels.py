"""The numba CPU kernels for qubit gate chains (adntn_lab.engine.gate_kernels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_lean import _weight_and_grads  # noqa: E402  (tests/ is on the path)

import adntn_lab as al
from adntn_lab.engine import gate_kernels as gk
from adntn_lab.nn import ADNTNLinear

pytestmark = pytest.mark.skipif(not gk.available(), reason="numba is not installed")


def _reference(x, gates, lines, n_lines):
    """Gate by gate with torch.tensordot (autograd-differentiable)."""
    x = x.reshape([2] * n_lines)
    for p, g in zip(lines, gates):
        x = torch.tensordot(x, g.reshape(2, 2, 2, 2), ([p, p + 1], [0, 1]))
        x = torch.movedim(x, (n_lines - 2, n_lines - 1), (p, p + 1))
    return x.reshape(-1)


CHAINS = [
    (16, tuple(range(15)) * 2, 14, 6),                                   # two staircases
    (17, tuple(range(0, 16, 2)) + tuple(range(1, 16, 2)), 14, 6),        # brick pattern
    (15, (3, 0, 13, 7, 8, 1, 12, 13, 2), 12, 4),                          # any order
    (12, (0, 10, 5, 1), 16, 6),                                           # chunk > state
    (18, tuple(range(17)), 10, 2),                                        # many phases
]


@pytest.mark.parametrize("n_lines,lines,chunk,spect", CHAINS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_phases_equal_gate_by_gate_forward_and_backward(n_lines, lines, chunk, spect, dtype):
    plan = gk.plan_phases(n_lines, lines, chunk, spect)
    assert sorted(g for p in plan.phases for g in p.gates) == list(range(len(lines)))
    gen = torch.Generator().manual_seed(n_lines)
    x = torch.randn(1 << n_lines, dtype=dtype, generator=gen)
    gates = torch.randn(len(lines), 16, dtype=dtype, generator=gen) / 2
    xr, gr = x.clone().requires_grad_(), gates.clone().requires_grad_()
    ref = _reference(xr, gr, lines, n_lines)
    grad_out = torch.randn(ref.shape, dtype=dtype, generator=gen)
    ref.backward(grad_out)

    # forward, phase by phase, keeping each phase's input
    states = [x.clone()]
    for k in range(len(plan.phases)):
        s = states[-1].clone()
        gk.apply_phases_(s.numpy(), gates.numpy(), plan, range(k, k + 1))
        states.append(s)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(states[-1], ref.detach(), **tol)
    # backward
    g = grad_out.clone()
    grad_gates = np.zeros((len(lines), 16), dtype=gates.numpy().dtype)
    for k in range(len(plan.phases) - 1, -1, -1):
        gk.phase_backward_(states[k].numpy(), g.numpy(), gates.numpy(), plan, k, grad_gates)
    torch.testing.assert_close(g, xr.grad, **tol)
    scale = gr.grad.abs().max()
    torch.testing.assert_close(torch.from_numpy(grad_gates) / scale, gr.grad / scale, **tol)


def test_every_gate_of_a_phase_runs_over_contiguous_spectator_runs():
    plan = gk.plan_phases(27, tuple(range(26)) * 2)
    assert len(plan.phases) <= 8
    for phase in plan.phases:
        assert phase.sb.min() >= 1 << gk.SPECTATOR_BITS
        assert (phase.sa == 2 * phase.sb).all()


def test_bad_lines_are_refused():
    with pytest.raises(ValueError, match="do not fit"):
        gk.plan_phases(10, (9,))


@pytest.mark.parametrize("recompute", ["auto", "lean", True, False])
@pytest.mark.parametrize("pattern", ["staircase", "brickwall"])
def test_brickwall_weight_and_gradients_equal_the_block_path(recompute, pattern, monkeypatch):
    gen = al.build("brickwall", 1024, 512, depth=3, pattern=pattern, activation="tanh")
    assert any(c is not None for c in gen.program.chains)
    w_kernel, g_kernel = _weight_and_grads(gen, recompute)
    monkeypatch.setenv("ADNTN_LAB_GATE_KERNELS", "0")
    w_block, g_block = _weight_and_grads(gen, recompute)
    torch.testing.assert_close(w_kernel, w_block, rtol=1e-11, atol=1e-12)
    assert set(g_kernel) == set(g_block) == set(gen.trainable_names)
    for name in g_block:
        torch.testing.assert_close(g_kernel[name], g_block[name], rtol=1e-9, atol=1e-11)


def test_kernel_chain_passes_gradcheck():
    gen = al.build("brickwall", 256, 64, depth=2, activation="tanh")
    names = gen.trainable_names
    fixed = {k: torch.tensor(v) for k, v in gen.params.items() if k not in names}

    def weight(*cores):
        return gen.program.run({**fixed, **dict(zip(names, cores))})

    cores = tuple(torch.tensor(gen.params[k], requires_grad=True) for k in names)
    assert torch.autograd.gradcheck(weight, cores, fast_mode=True)


def test_kernels_leave_the_chain_to_blocks_where_they_cannot_run(monkeypatch):
    gen = al.build("brickwall", 256, 64, depth=2)
    chain = next(c for c in gen.program.chains if c is not None)
    state = torch.zeros(chain.line_dims)
    assert gk.torch_phases(chain, state) is not None
    assert gk.torch_phases(chain, state.to(torch.bfloat16)) is None
    monkeypatch.setenv("ADNTN_LAB_GATE_KERNELS", "0")
    assert gk.torch_phases(chain, state) is None


def test_a_brickwall_layer_trains_with_the_kernels():
    torch.manual_seed(0)
    layer = ADNTNLinear(512, 128, topology="brickwall", depth=3)
    x, y = torch.randn(64, 512), torch.randn(64, 128)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(layer(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
