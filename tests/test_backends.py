"""Backend selection, device checks and the DLPack/adjoint contraction path, on the CPU.

The GPU-only counterparts live in ``test_gpu.py``. Here the machine's CUDA state is simulated
where an error path needs it, and :func:`adntn_lab.engine.cupy_backend.contract_weight` runs its
numpy engine, whose forward and adjoint algebra are the same code as on CuPy.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import adntn_lab as al
from adntn_lab.engine import backends
from adntn_lab.engine.backends import (
    BackendUnavailableError,
    check_arrays,
    cuda_index,
    resolve_backend,
)
from adntn_lab.engine.cupy_backend import contract_weight, layer_weight, to_cupy, to_torch
from adntn_lab.nn import ADNTNLinear

# (family, options, in_features, out_features): every family, nonlinear where it has stages,
# padded and unpadded tensorisations
CASES = [
    ("ttn", {}, 256, 128),
    ("ttn", {"lateral": True}, 200, 90),
    ("ttn", {"activation": "gelu"}, 256, 128),
    ("attn", {"activation": "silu"}, 256, 128),
    ("mera", {}, 256, 128),
    ("mera", {"lateral": True, "activation": "tanh"}, 256, 128),
    ("brickwall", {"pattern": "brickwall"}, 100, 60),
    ("brickwall", {"activation": "leaky_relu"}, 64, 32),
    ("mpo", {}, 256, 128),
    ("lowrank", {}, 100, 60),
]
IDS = [f"{f}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}" for f, o, _, _ in CASES]

_GENS: dict = {}


def generator(case):
    family, options, n_in, n_out = case
    key = (family, tuple(sorted(options.items())), n_in, n_out)
    if key not in _GENS:
        _GENS[key] = al.build(family, n_in, n_out, seed=3, **options)
    return _GENS[key]


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine with neither CuPy nor a CUDA device visible to torch."""
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


# ---------------------------------------------------------------------- clear errors
def test_missing_cupy_names_the_install_command(no_cuda):
    gen = generator(CASES[0])
    with pytest.raises(ImportError, match=r"pip install adntn_lab\[gpu\]") as err:
        gen.weight(backend="cupy")
    msg = str(err.value)
    assert "backend='cupy'" in msg and "not installed" in msg
    assert "This machine has" in msg and "CuPy not installed" in msg
    with pytest.raises(ImportError, match=r"pip install adntn_lab\[gpu\]"):
        backends.require_cupy()
    assert backends.available_backends() == ["numpy", "torch"]


def test_torch_cuda_without_cuda_is_refused(no_cuda):
    gen = generator(CASES[0])
    for device in ("cuda", "cuda:0", torch.device("cuda", 1), 0):
        with pytest.raises(BackendUnavailableError, match="torch sees no CUDA device") as err:
            gen.weight(backend="torch", device=device)
        msg = str(err.value)
        assert "device='cpu'" in msg
        assert "this machine has: numpy" in msg and "no usable CUDA device" in msg
    assert isinstance(err.value, RuntimeError)


def test_cuda_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Card{i}")
    with pytest.raises(BackendUnavailableError, match=r"only 2 CUDA device\(s\)") as err:
        resolve_backend("torch", "cuda:2")
    assert "cuda:0 Card0" in str(err.value)
    assert resolve_backend("torch", "cuda:1") == ("torch", "cuda:1")


def test_auto_without_gpu_runs_numpy_and_says_so(no_cuda, caplog):
    gen = generator(CASES[0])
    with caplog.at_level("INFO", logger="adntn_lab.engine.backends"):
        W = gen.weight(backend="auto")
    assert isinstance(W, np.ndarray) and W.dtype == np.float64
    np.testing.assert_array_equal(W, gen.weight())
    assert "backend='auto' chose numpy" in caplog.text
    with pytest.raises(BackendUnavailableError, match="neither CuPy nor torch sees one"):
        gen.weight(backend="auto", device="cuda")
    assert resolve_backend("auto", "cpu") == ("numpy", None)


def test_bad_backend_and_device_names():
    gen = generator(CASES[0])
    with pytest.raises(ValueError, match="unknown backend 'jax'.*'auto'"):
        gen.weight(backend="jax")
    with pytest.raises(ValueError, match="unknown device 'gpu'.*'cuda:N'"):
        gen.weight(backend="torch", device="gpu")
    with pytest.raises(ValueError, match="numpy' runs on the CPU only"):
        gen.weight(backend="numpy", device="cuda")
    assert [cuda_index(d) for d in (None, "cpu", "cuda", "cuda:3", 2, torch.device("cuda:1"))] \
        == [None, None, 0, 3, 2, 1]
    with pytest.raises(ValueError, match="negative"):
        cuda_index(-1)


def test_program_run_refuses_mixed_numpy_and_torch():
    gen = generator(CASES[0])
    names = list(gen.params)
    arrays = {n: (torch.from_numpy(v) if i % 2 else v) for i, (n, v) in
              enumerate(gen.params.items())}
    with pytest.raises(TypeError, match="more than one backend or device") as err:
        gen.program.run(arrays)
    msg = str(err.value)
    assert "numpy on cpu" in msg and "torch on cpu" in msg
    assert names[0] in msg and names[1] in msg and "to_backend" in msg
    with pytest.raises(TypeError, match="more than one backend"):
        gen.weight(params=arrays)


def test_program_run_refuses_mixed_devices_and_non_arrays():
    gen = generator(CASES[0])
    arrays = {n: torch.from_numpy(v) for n, v in gen.params.items()}
    first = next(iter(arrays))
    arrays[first] = torch.empty(arrays[first].shape, device="meta")
    with pytest.raises(TypeError, match="torch on meta") as err:
        gen.program.run(arrays)
    assert "torch on cpu" in str(err.value) and "tensor.to(device)" in str(err.value)
    arrays[first] = gen.params[first].tolist()
    with pytest.raises(TypeError, match=f"array '{first}' is a list"):
        gen.program.run(arrays)
    assert check_arrays({n: torch.from_numpy(v) for n, v in gen.params.items()}) \
        == ("torch", "cpu")


# ---------------------------------------------------------------------- bridge and adjoint
def test_numpy_bridge_shares_memory():
    a = np.arange(12.0).reshape(3, 4)[:, 1:]
    t = to_torch(a)
    assert t.data_ptr() == a.ctypes.data and t.shape == (3, 3)
    t[0, 0] = -1.0
    assert a[0, 0] == -1.0
    with pytest.raises(TypeError, match=r"CUDA device.*tensor\.cuda\(\)"):
        to_cupy(torch.zeros(2))
    with pytest.raises(TypeError, match="CuPy or numpy"):
        to_torch([1.0])


@pytest.mark.parametrize("mode", ["adjoint", "recompute"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_contract_weight_matches_torch_autograd(case, mode):
    gen = generator(case)
    trainable = set(gen.trainable_names)
    ref = {n: torch.tensor(v, requires_grad=n in trainable) for n, v in gen.params.items()}
    mine = {n: torch.tensor(v, requires_grad=n in trainable) for n, v in gen.params.items()}
    W_ref = gen.program.run(ref)
    W = contract_weight(gen.program, mine, mode=mode)
    assert W.shape == (gen.out_features, gen.in_features)
    torch.testing.assert_close(W, W_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(W.detach().numpy(), gen.weight(), rtol=1e-12, atol=1e-14)
    probe = torch.from_numpy(np.random.default_rng(1).standard_normal(W.shape))
    (W_ref * probe).sum().backward()
    (W * probe).sum().backward()
    for n in gen.params:
        if n in trainable:
            torch.testing.assert_close(mine[n].grad, ref[n].grad, rtol=1e-10, atol=1e-13,
                                       msg=lambda m, n=n: f"core {n}: {m}")
        else:
            assert mine[n].grad is None


def test_contract_weight_only_differentiates_what_is_asked():
    gen = generator(CASES[4])  # mera: several cores in one group
    names = gen.trainable_names
    frozen = set(names[::2])
    ref = {n: torch.tensor(v, requires_grad=n in names and n not in frozen)
           for n, v in gen.params.items()}
    mine = {n: t.detach().clone().requires_grad_(t.requires_grad) for n, t in ref.items()}
    probe = torch.randn(gen.shape, dtype=torch.float64)
    (gen.program.run(ref) * probe).sum().backward()
    (contract_weight(gen.program, mine) * probe).sum().backward()
    for n in gen.params:
        if ref[n].requires_grad:
            torch.testing.assert_close(mine[n].grad, ref[n].grad, rtol=1e-10, atol=1e-13)
        else:
            assert mine[n].grad is None


def test_contract_weight_rejects_bad_input():
    gen = generator(CASES[0])
    with pytest.raises(TypeError, match="takes torch tensors"):
        contract_weight(gen.program, dict(gen.params))
    arrays = {n: torch.from_numpy(v) for n, v in gen.params.items()}
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        contract_weight(gen.program, arrays, mode="fast")
    with pytest.raises(TypeError, match="ADNTNLinear or GeneratedWeight"):
        layer_weight(torch.nn.Linear(2, 2))


def test_layer_weight_trains_like_the_layer():
    torch.manual_seed(0)
    a = ADNTNLinear(64, 32, topology="ttn", schedule="materialize", dtype=torch.float64, seed=2)
    b = ADNTNLinear(64, 32, topology="ttn", schedule="materialize", dtype=torch.float64, seed=2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(16, 64, dtype=torch.float64)
    y = torch.randn(16, 32, dtype=torch.float64)
    losses = {"layer": [], "contract_weight": []}
    for layer, how in ((a, "layer"), (b, "contract_weight")):
        opt = torch.optim.Adam(layer.parameters(), lr=0.01)
        for _ in range(3):
            opt.zero_grad()
            w = layer.weight if how == "layer" else layer_weight(layer)
            loss = torch.nn.functional.mse_loss(torch.nn.functional.linear(x, w, layer.bias), y)
            loss.backward()
            opt.step()
            losses[how].append(loss.item())
    np.testing.assert_allclose(losses["contract_weight"], losses["layer"], rtol=1e-10)
    assert losses["layer"][-1] < losses["layer"][0]


@pytest.mark.parametrize("eq", ["ab,bc->ac", "abc,cd->dba", "ab,bc->c", "ab,ab->ab", "ab,b->a",
                                "abc,bd->ad"])
def test_pairwise_adjoint_matches_autograd(eq):
    from adntn_lab.engine.cupy_backend import _vjp_pair

    rng = np.random.default_rng(7)
    dims = dict(zip("abcd", (3, 4, 5, 2)))
    lhs, out = eq.split("->")
    ia, ib = lhs.split(",")
    a = torch.tensor(rng.standard_normal([dims[c] for c in ia]), requires_grad=True)
    b = torch.tensor(rng.standard_normal([dims[c] for c in ib]), requires_grad=True)
    g = rng.standard_normal([dims[c] for c in out])
    torch.einsum(eq, a, b).backward(torch.from_numpy(g))
    ga, gb = _vjp_pair(eq, a.detach().numpy(), b.detach().numpy(), g, True, True)
    np.testing.assert_allclose(ga, a.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, b.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert _vjp_pair(eq, a.detach().numpy(), b.detach().numpy(), g, False, True)[0] is None


def test_adjoint_backward_runs_once():
    gen = generator(CASES[0])
    arrays = {n: torch.tensor(v, requires_grad=n in gen.trainable_names)
              for n, v in gen.params.items()}
    W = contract_weight(gen.program, arrays)
    W.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="mode='recompute'"):
        W.sum().backward()
    W = contract_weight(gen.program, arrays, mode="recompute")
    W.sum().backward(retain_graph=True)
    W.sum().backward()  # recompute keeps nothing and can run again
