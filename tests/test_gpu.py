"""CUDA tests: CuPy and torch-CUDA results against the numpy reference, the DLPack bridge, the
CuPy contraction inside torch autograd, and a layer training on the GPU.

Every test here is marked ``gpu`` and is skipped (by ``conftest.py``) where no CUDA device is
usable. Run them with ``python -m pytest -m gpu tests/test_gpu.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adntn_lab as al
from adntn_lab.engine.backends import BackendUnavailableError, available_backends
from adntn_lab.engine.cupy_backend import contract_weight, layer_weight, to_cupy, to_torch
from adntn_lab.nn import ADNTNLinear

pytestmark = pytest.mark.gpu

# every family, nonlinear where it has stages, padded and unpadded tensorisations
CASES = [
    ("ttn", {}, 256, 128),
    ("ttn", {"lateral": True}, 200, 90),
    ("attn", {"activation": "gelu"}, 256, 128),
    ("mera", {}, 256, 128),
    ("mera", {"lateral": True, "activation": "silu"}, 256, 128),
    ("brickwall", {}, 64, 32),
    ("brickwall", {"pattern": "brickwall", "activation": "tanh"}, 100, 60),
    ("mpo", {}, 256, 128),
    ("lowrank", {}, 100, 60),
]
IDS = [f"{f}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}" for f, o, _, _ in CASES]

_GENS: dict = {}


@pytest.fixture(params=CASES, ids=IDS)
def gen(request):
    family, options, n_in, n_out = request.param
    if request.param_index not in _GENS:
        _GENS[request.param_index] = al.build(family, n_in, n_out, seed=5, **options)
    return _GENS[request.param_index]


@pytest.fixture(scope="module")
def cupy():
    return pytest.importorskip("cupy")


def _cuda():
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    return torch.device("cuda")


def _assert_like(got, ref, rtol):
    """``got`` equals ``ref`` to ``rtol`` relative to the largest entry of ``ref``."""
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=rtol * float(np.abs(ref).max()))


# ---------------------------------------------------------------------- forward
def test_cupy_weight_equals_numpy(gen, cupy):
    ref = gen.weight()
    W = gen.weight(backend="cupy")
    assert isinstance(W, cupy.ndarray) and W.dtype == cupy.float64
    _assert_like(cupy.asnumpy(W), ref, 1e-12)
    W32 = gen.weight(backend="cupy", dtype=cupy.float32)
    assert W32.dtype == cupy.float32
    _assert_like(cupy.asnumpy(W32), ref, 1e-4)


def test_torch_cuda_weight_equals_numpy(gen):
    device = _cuda()
    ref = gen.weight()
    W = gen.weight(backend="torch", device=device, dtype=torch.float64)
    assert W.device.type == "cuda" and W.dtype == torch.float64
    _assert_like(W.cpu().numpy(), ref, 1e-12)
    W32 = gen.weight(backend="torch", device="cuda")
    assert W32.dtype == torch.float32
    _assert_like(W32.cpu().numpy(), ref, 1e-4)


def test_auto_backend_runs_on_the_gpu(cupy):
    g = al.build("ttn", 256, 128)
    assert "cupy" in available_backends()
    W = g.weight(backend="auto")
    assert isinstance(W, cupy.ndarray)
    _assert_like(cupy.asnumpy(W), g.weight(), 1e-12)


def test_capture_on_cupy_matches_numpy(cupy):
    g = al.build("mera", 256, 128, seed=1)
    _, ref = g.program.run(g.params, capture=True)
    arrays = {k: cupy.asarray(v) for k, v in g.params.items()}
    W, caps = g.program.run(arrays, capture=True)
    assert isinstance(W, cupy.ndarray) and len(caps) == len(ref) > 0
    for c, r in zip(caps, ref):
        assert (c.stage, c.group, c.step, c.shape) == (r.stage, r.group, r.step, r.shape)
        assert isinstance(c.array, cupy.ndarray)
        _assert_like(cupy.asnumpy(c.array), r.array, 1e-12)


def test_fused_on_cuda_equals_materialize(gen, cupy):
    if not gen.activations[-1].is_identity:
        pytest.skip("fused needs a linear last stage")
    device = _cuda()
    x = np.random.default_rng(0).standard_normal((7, gen.in_features))
    ref = x @ gen.weight().T
    arrays = {k: torch.as_tensor(v, device=device) for k, v in gen.params.items()}
    y = gen.program.fused(arrays, torch.as_tensor(x, device=device))
    assert y.device.type == "cuda"
    _assert_like(y.cpu().numpy(), ref, 1e-11)
    W = gen.program.run(arrays)
    _assert_like((torch.as_tensor(x, device=device) @ W.T).cpu().numpy(), ref, 1e-11)
    carrays = {k: cupy.asarray(v) for k, v in gen.params.items()}
    yc = gen.program.fused(carrays, cupy.asarray(x))
    _assert_like(cupy.asnumpy(yc), ref, 1e-11)


# ---------------------------------------------------------------------- bridge and errors
def test_dlpack_bridge_shares_memory(cupy):
    device = _cuda()
    t = torch.arange(24.0, device=device).reshape(4, 6)[:, 1:]
    a = to_cupy(t)
    assert isinstance(a, cupy.ndarray) and a.shape == (4, 5)
    assert a.data.ptr == t.data_ptr()
    a[0, 0] = -7.0
    assert float(t[0, 0]) == -7.0
    b = cupy.ones((3, 2), dtype=cupy.float32)
    tb = to_torch(b)
    assert tb.device.type == "cuda" and tb.data_ptr() == b.data.ptr
    tb.mul_(3.0)
    assert float(b.sum()) == 18.0


def test_mixed_devices_and_backends_are_refused(cupy):
    device = _cuda()
    g = al.build("ttn", 256, 128)
    names = list(g.params)
    arrays = {n: torch.as_tensor(v, device=device) for n, v in g.params.items()}
    arrays[names[0]] = arrays[names[0]].cpu()
    with pytest.raises(TypeError, match=r"torch on cpu .*torch on cuda:0|torch on cuda:0.*cpu"):
        g.program.run(arrays)
    arrays[names[0]] = cupy.asarray(g.params[names[0]])
    with pytest.raises(TypeError, match="cupy on cuda:0"):
        g.program.run(arrays)
    with pytest.raises(ValueError, match="names the CPU"):
        g.weight(backend="cupy", device="cpu")
    beyond = torch.cuda.device_count()
    with pytest.raises(BackendUnavailableError, match=f"cuda:{beyond}"):
        g.weight(backend="torch", device=f"cuda:{beyond}")


# ---------------------------------------------------------------------- autograd via CuPy
@pytest.mark.parametrize("mode", ["adjoint", "recompute"])
def test_cupy_gradients_equal_torch(gen, mode, cupy):
    device = _cuda()
    trainable = set(gen.trainable_names)

    def cores():
        return {n: torch.tensor(v, device=device, requires_grad=n in trainable)
                for n, v in gen.params.items()}

    ref, mine = cores(), cores()
    W_ref = gen.program.run(ref)
    W = contract_weight(gen.program, mine, mode=mode)
    assert W.device == W_ref.device and W.dtype == torch.float64
    torch.testing.assert_close(W, W_ref, rtol=1e-12, atol=1e-14)
    probe = torch.randn(W.shape, dtype=torch.float64, device=device)
    (W_ref * probe).sum().backward()
    (W * probe).sum().backward()
    for n in gen.params:
        if n in trainable:
            assert mine[n].grad.device.type == "cuda"
            scale = float(ref[n].grad.abs().max())
            torch.testing.assert_close(mine[n].grad, ref[n].grad, rtol=1e-9,
                                       atol=1e-12 * scale,
                                       msg=lambda m, n=n: f"core {n}: {m}")
        else:
            assert mine[n].grad is None


def test_cupy_gradients_float32_match_cpu_float64(cupy):
    device = _cuda()
    g = al.build("ttn", 256, 128, seed=4)
    trainable = set(g.trainable_names)
    ref = {n: torch.tensor(v, requires_grad=n in trainable) for n, v in g.params.items()}
    mine = {n: torch.tensor(v, dtype=torch.float32, device=device,
                            requires_grad=n in trainable) for n, v in g.params.items()}
    probe = torch.randn(g.shape, dtype=torch.float64)
    (g.program.run(ref) * probe).sum().backward()
    (contract_weight(g.program, mine) * probe.to(device, torch.float32)).sum().backward()
    for n in trainable:
        scale = float(ref[n].grad.abs().max())
        torch.testing.assert_close(mine[n].grad.double().cpu(), ref[n].grad, rtol=0,
                                   atol=1e-4 * scale)


# ---------------------------------------------------------------------- training on CUDA
def _regression(device, n_in=64, n_out=32, rows=64):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, n_in, generator=gen)
    target = torch.randn(n_out, n_in, generator=gen) / n_in ** 0.5
    return x.to(device), (x @ target.T).to(device)


@pytest.mark.parametrize("schedule", ["materialize", "fused"])
def test_linear_trains_on_cuda(schedule):
    device = _cuda()
    torch.manual_seed(0)
    layer = ADNTNLinear(64, 32, topology="ttn", schedule=schedule, device="cuda")
    assert all(p.device.type == "cuda" for p in layer.parameters())
    x, y = _regression(device)
    opt = torch.optim.Adam(layer.parameters(), lr=0.02)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(layer(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert layer(x).device.type == "cuda"
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0]


def test_linear_trains_through_cupy_like_torch(cupy):
    device = _cuda()
    torch.manual_seed(0)
    a = ADNTNLinear(64, 32, topology="mera", schedule="materialize", device="cuda",
                    dtype=torch.float64)
    b = ADNTNLinear(64, 32, topology="mera", schedule="materialize", device="cuda",
                    dtype=torch.float64)
    b.load_state_dict(a.state_dict())
    x, y = _regression(device)
    x, y = x.double(), y.double()
    losses = {"torch": [], "cupy": []}
    for layer, how in ((a, "torch"), (b, "cupy")):
        opt = torch.optim.Adam(layer.parameters(), lr=0.02)
        for _ in range(5):
            opt.zero_grad()
            w = layer.weight if how == "torch" else layer_weight(layer)
            loss = torch.nn.functional.mse_loss(torch.nn.functional.linear(x, w, layer.bias), y)
            loss.backward()
            opt.step()
            losses[how].append(loss.item())
    np.testing.assert_allclose(losses["cupy"], losses["torch"], rtol=1e-9)
    assert losses["torch"][-1] < losses["torch"][0]
