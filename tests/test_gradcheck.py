"""Reverse-mode gradients through the stage executor and the torch layers (float64 gradcheck)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import adntn_lab as al  # noqa: E402
from adntn_lab.nn import ADNTNLinear  # noqa: E402

CUSTOM = {
    "format": "adntn-graph/1",
    "in_features": 6,
    "out_features": 5,
    "out_modes": [2, 1, 3],
    "in_modes": [1, 3, 2],
    "cores": [
        {"name": "a", "stage": 0, "sites": [0]},
        {"name": "b", "stage": 0, "sites": [1]},
        {"name": "c", "stage": 1, "sites": [2]},
        {"name": "m", "stage": 1, "sites": []},
        {"name": "t", "stage": 2, "sites": []},
    ],
    "bonds": [
        {"u": "a", "v": "b", "dim": 2},
        {"u": "a", "v": "m", "dim": 2},
        {"u": "b", "v": "m", "dim": 2},
        {"u": "c", "v": "t", "dim": 2},
        {"u": "m", "v": "t", "dim": 3},
    ],
}

# (id, family, in, out, options); tanh keeps nonlinear families smooth
CASES = [
    ("ttn", "ttn", 7, 6, {"n_sites": 4, "bond_dim": 2, "activation": "tanh"}),
    ("ttn-lateral", "ttn", 8, 8, {"n_sites": 8, "bond_dim": 2, "activation": "tanh",
                                  "lateral": True,
                                  "out_modes": (2, 2, 2, 1, 1, 1, 1, 1),
                                  "in_modes": (1, 1, 1, 1, 1, 2, 2, 2)}),
    ("attn", "attn", 6, 5, {"n_sites": 4, "bond_dim": 2, "activation": "tanh"}),
    ("mera", "mera", 8, 8, {"n_sites": 8, "bond_dim": 2, "activation": "tanh",
                            "out_modes": (2, 2, 2, 1, 1, 1, 1, 1),
                            "in_modes": (1, 1, 1, 1, 1, 2, 2, 2)}),
    ("mera-lateral", "mera", 8, 8, {"n_sites": 8, "bond_dim": 2, "activation": "tanh",
                                    "lateral": True,
                                    "out_modes": (2, 2, 2, 1, 1, 1, 1, 1),
                                    "in_modes": (1, 1, 1, 1, 1, 2, 2, 2)}),
    ("brickwall-staircase", "brickwall", 5, 3,
     {"depth": 3, "pattern": "staircase", "activation": "tanh"}),
    ("brickwall-brickwall", "brickwall", 5, 3,
     {"depth": 2, "pattern": "brickwall", "activation": "tanh"}),
    ("mpo", "mpo", 9, 7, {"n_cores": 3, "bond_dim": 2}),
    ("lowrank", "lowrank", 7, 5, {"rank": 2}),
]


def _gradcheck_generator(gen):
    names = gen.trainable_names
    consts = {n: torch.as_tensor(gen.params[n], dtype=torch.float64)
              for n in gen.constant_names}
    inputs = tuple(torch.as_tensor(gen.params[n], dtype=torch.float64).clone()
                   .requires_grad_(True) for n in names)

    def W(*cores):
        return gen.program.run({**dict(zip(names, cores)), **consts})

    assert W(*inputs).shape == (gen.out_features, gen.in_features)
    assert torch.autograd.gradcheck(W, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
    # every core receives a gradient
    out = W(*inputs)
    grads = torch.autograd.grad((out * torch.randn_like(out)).sum(), inputs)
    assert all(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_gradcheck_every_family(case):
    _, family, in_f, out_f, options = case
    gen = al.build(family, in_f, out_f, seed=1, **options)
    assert gen.num_params < 700  # keep gradcheck quick
    _gradcheck_generator(gen)


def test_gradcheck_custom_graph():
    gen = al.from_graph(CUSTOM, activation="tanh", seed=3)
    assert gen.num_stages == 3
    _gradcheck_generator(gen)


def test_gradcheck_sliced_execution():
    gen = al.build("ttn", 4, 4, bond_dim=16, n_sites=2, activation="identity")
    limit = gen.program.minimum_memory(8) + 30 * 8  # root group runs in slices (see test_plan)
    names = gen.trainable_names
    inputs = tuple(torch.as_tensor(gen.params[n], dtype=torch.float64).clone()
                   .requires_grad_(True) for n in names)

    def W(*cores):
        return gen.program.run(dict(zip(names, cores)), memory_limit=limit)

    assert torch.autograd.gradcheck(W, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def _layer_function(layer):
    names = [n for n, _ in layer.named_parameters() if n != "bias"]
    params = dict(layer.named_parameters())

    def f(x, *cores):
        values = {**params, **dict(zip(names, cores))}
        return torch.func.functional_call(layer, values, (x,))

    cores = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
    return f, cores


@pytest.mark.parametrize("schedule", ["materialize", "fused"])
@pytest.mark.parametrize("topology,options", [
    ("ttn", {"bond_dim": 2, "n_sites": 3, "activation": "tanh"}),
    ("mpo", {"bond_dim": 2}),
    ("brickwall", {"depth": 2, "activation": "tanh"}),
], ids=["ttn", "mpo", "brickwall"])
def test_gradcheck_adntn_linear(topology, options, schedule):
    torch.manual_seed(0)
    layer = ADNTNLinear(7, 5, topology=topology, schedule=schedule, **options).double()
    assert layer.schedule_for(3) == schedule
    f, cores = _layer_function(layer)
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert f(x, *cores).dtype == torch.float64
    assert torch.autograd.gradcheck(f, (x, *cores), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_layer_gradients_agree_between_schedules():
    torch.manual_seed(0)
    mat = ADNTNLinear(12, 10, topology="ttn", schedule="materialize", bond_dim=3,
                      n_sites=3, activation="tanh").double()
    fus = ADNTNLinear(12, 10, topology="ttn", schedule="fused", bond_dim=3,
                      n_sites=3, activation="tanh").double()
    fus.load_state_dict(mat.state_dict())
    x = torch.randn(6, 12, dtype=torch.float64)
    ya, yb = mat(x), fus(x)
    torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-12)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (na, pa), (nb, pb) in zip(mat.named_parameters(), fus.named_parameters()):
        assert na == nb
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-9, atol=1e-12)
