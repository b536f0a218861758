"""torch layers: ADNTNLinear, ADNTNConv2d, from_linear and compress_model."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from adntn_lab.nn import ADNTNConv2d, ADNTNLinear, compress_model  # noqa: E402


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, 10)  # 640 weights: below the default min_params

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)  # 150 weights: stays dense
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def adam_lowers_loss(model, x, y, steps=6):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(F.cross_entropy(model(x), y))
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(F.cross_entropy(model(x), y))
    return before, after


# ---------------------------------------------------------------------------- ADNTNLinear
def test_linear_forward_equals_independent_weight():
    torch.manual_seed(0)
    layer = ADNTNLinear(30, 20, topology="ttn", bond_dim=3, n_sites=3, activation="tanh",
                        schedule="materialize", dtype=torch.float64)
    W = layer.export_generator().weight()  # numpy path, float64
    assert W.shape == (20, 30)
    x = torch.randn(2, 5, 30, dtype=torch.float64)
    expect = x.numpy() @ W.T + layer.bias.detach().numpy()
    np.testing.assert_allclose(layer(x).detach().numpy(), expect, rtol=1e-10, atol=1e-12)
    assert layer(x).shape == (2, 5, 20)
    with pytest.raises(ValueError, match="last dimension 30"):
        layer(torch.randn(4, 31, dtype=torch.float64))


def test_linear_weight_is_trainable_and_bias_optional():
    layer = ADNTNLinear(16, 12, bias=False, topology="mpo", bond_dim=2)
    assert layer.bias is None
    names = {n.split(".")[-1] for n, _ in layer.named_parameters()}
    assert names == set(layer.generator.trainable_names)
    assert layer.num_params == layer.generator.num_params
    layer.weight.square().sum().backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0
               for p in layer.parameters())


def test_linear_state_dict_round_trip():
    torch.manual_seed(0)
    a = ADNTNLinear(40, 24, topology="brickwall", depth=2, seed=0)
    b = ADNTNLinear(40, 24, topology="brickwall", depth=2, seed=1)
    x = torch.randn(3, 40)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_linear_extra_repr_mentions_compression():
    layer = ADNTNLinear(256, 128, topology="ttn", bond_dim=4)
    g = layer.generator
    text = repr(layer)
    assert "ADNTNLinear" in text and "topology=ttn" in text
    assert f"params={g.num_params:,}" in text
    assert f"dense {256 * 128:,}" in text
    assert f"{256 * 128 / g.num_params:,.1f}x" in text


def test_from_linear_fits_the_dense_weight():
    torch.manual_seed(0)
    dense = nn.Linear(24, 16)
    # an exactly rank-2 weight is recovered exactly by the low-rank family
    with torch.no_grad():
        dense.weight.copy_(torch.randn(16, 2) @ torch.randn(2, 24))
    low = ADNTNLinear.from_linear(dense, "lowrank", rank=2)
    assert low.fit_error < 1e-5
    x = torch.randn(5, 24)
    torch.testing.assert_close(low(x), dense(x), rtol=1e-4, atol=1e-4)
    # gradient fitting improves on the random start
    torch.manual_seed(1)
    dense2 = nn.Linear(24, 16)
    start = ADNTNLinear.from_linear(dense2, "ttn", fit_steps=0, bond_dim=4, n_sites=3)
    fitted = ADNTNLinear.from_linear(dense2, "ttn", fit_steps=60, bond_dim=4, n_sites=3)
    assert 0 <= fitted.fit_error < start.fit_error
    rel = torch.linalg.norm(fitted.weight - dense2.weight) / torch.linalg.norm(dense2.weight)
    assert float(rel.detach()) == pytest.approx(fitted.fit_error, rel=1e-4)
    torch.testing.assert_close(fitted.bias, dense2.bias)


# ---------------------------------------------------------------------------- ADNTNConv2d
CONV_VARIANTS = [
    dict(kernel_size=3, stride=1, padding=0, dilation=1),
    dict(kernel_size=3, stride=2, padding=1, dilation=1),
    dict(kernel_size=3, stride=1, padding=2, dilation=2),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    dict(kernel_size=3, stride=1, padding="same", dilation=2),
    dict(kernel_size=(2, 3), stride=1, padding="valid", dilation=1),
]


@pytest.mark.parametrize("variant", CONV_VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_conv_equals_f_conv2d_with_generated_kernel(variant):
    torch.manual_seed(0)
    layer = ADNTNConv2d(3, 5, dtype=torch.float64, bond_dim=2, **variant)
    kh, kw = layer.kernel_size
    W = layer.export_generator().weight()  # numpy, (C_out, C_in*kh*kw)
    assert W.shape == (5, 3 * kh * kw)
    kernel = torch.from_numpy(W.reshape(5, 3, kh, kw))
    x = torch.randn(2, 3, 11, 9, dtype=torch.float64)
    expect = F.conv2d(x, kernel, layer.bias, variant["stride"], variant["padding"],
                      variant["dilation"])
    got = layer(x)
    assert got.shape == expect.shape
    torch.testing.assert_close(got, expect, rtol=1e-10, atol=1e-12)
    # same shape as the dense Conv2d it replaces
    dense = nn.Conv2d(3, 5, **variant)
    assert dense(x.float()).shape == got.shape


@pytest.mark.parametrize("kwargs,fragment", [
    ({"groups": 4}, "groups=4 must divide both in_channels=6"),
    ({"groups": 0}, "groups must be a positive integer"),
    ({"padding_mode": "mirror"}, "padding_mode must be one of"),
    ({"padding": "same", "stride": 2}, "stride=1"),
])
def test_conv_options_nn_conv2d_rejects_are_refused_with_the_reason(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        ADNTNConv2d(6, 6, 3, **kwargs)
    assert fragment in str(info.value)


GROUPED_VARIANTS = [
    dict(in_channels=6, out_channels=4, groups=2, padding=1),
    dict(in_channels=8, out_channels=8, groups=8, padding=1, stride=2),  # depthwise
    dict(in_channels=4, out_channels=12, groups=4, padding="same", dilation=2),  # multiplier 3
    dict(in_channels=3, out_channels=5, padding=(2, 1), padding_mode="reflect"),
    dict(in_channels=4, out_channels=4, groups=2, padding=1, padding_mode="replicate"),
    dict(in_channels=3, out_channels=6, padding="same", padding_mode="circular", dilation=(1, 2)),
    dict(in_channels=3, out_channels=3, padding="valid", padding_mode="reflect"),
]


@pytest.mark.parametrize("variant", GROUPED_VARIANTS, ids=lambda v: "-".join(
    f"{k}={v[k]}" for k in ("groups", "padding", "padding_mode") if k in v))
def test_grouped_and_padded_conv_equals_nn_conv2d_holding_the_generated_kernel(variant):
    torch.manual_seed(0)
    layer = ADNTNConv2d(kernel_size=3, dtype=torch.float64, bond_dim=2, **variant)
    cin, cout, g = variant["in_channels"], variant["out_channels"], variant.get("groups", 1)
    W = layer.export_generator().weight()  # numpy, (C_out, C_in/groups*kh*kw)
    assert W.shape == (cout, cin // g * 9)
    dense = nn.Conv2d(kernel_size=3, dtype=torch.float64, **variant)
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(W.reshape(cout, cin // g, 3, 3)))
        dense.bias.copy_(layer.bias)
    x = torch.randn(2, cin, 9, 10, dtype=torch.float64)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-10, atol=1e-12)
    back = layer.to_dense()
    assert (back.groups, back.padding_mode, back.padding) == (dense.groups, dense.padding_mode,
                                                             dense.padding)
    torch.testing.assert_close(back(x), dense(x), rtol=1e-10, atol=1e-12)
    # calibrated to nn.Conv2d's kernel std, whose fan-in is that of one group
    assert W.std() * (3 * (cin // g) * 9) ** 0.5 == pytest.approx(1.0, rel=1e-6)
    layer(x).square().sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_from_conv_fits_a_depthwise_kernel():
    torch.manual_seed(0)
    dense = nn.Conv2d(8, 8, 3, groups=8, padding=1, padding_mode="reflect")
    layer = ADNTNConv2d.from_conv(dense, "lowrank", rank=8, fit_steps=300, lr=0.05)
    assert layer.groups == 8 and layer.padding_mode == "reflect"
    assert layer.fit_error < 1e-3  # rank 8 holds an 8x9 matrix exactly
    x = torch.randn(2, 8, 7, 7)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-3, atol=1e-3)


def test_conv_extra_repr_and_backward():
    layer = ADNTNConv2d(6, 16, 5, bond_dim=3)
    text = repr(layer)
    assert "topology=ttn" in text and f"dense {16 * 6 * 25:,}" in text
    out = layer(torch.randn(2, 6, 12, 12))
    assert out.shape == (2, 16, 8, 8)
    out.square().mean().backward()
    assert all(p.grad is not None for p in layer.parameters())


# ---------------------------------------------------------------------------- compress_model
def test_compress_mlp():
    torch.manual_seed(0)
    model = MLP()
    before = snapshot(model)
    new = compress_model(model, topology="ttn", bond_dim=4)
    # original untouched
    assert isinstance(model.fc1, nn.Linear) and isinstance(model.fc2, nn.Linear)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert isinstance(new.fc1, ADNTNLinear) and isinstance(new.fc2, ADNTNLinear)
    assert isinstance(new.fc3, nn.Linear)  # 640 < min_params
    assert n_params(new) < n_params(model)
    x = torch.randn(32, 64)
    assert new(x).shape == (32, 10)
    summary = {s["name"]: s for s in new.adntn_summary}
    for name in ("fc1", "fc2"):
        layer = getattr(new, name)
        dense = getattr(model, name)
        s = summary[name]
        assert s["kind"] == "Linear" and s["shape"] == tuple(dense.weight.shape)
        assert s["params_before"] == dense.weight.numel()
        assert s["params_after"] == layer.generator.num_params < s["params_before"]
        assert s["ratio"] == pytest.approx(s["params_before"] / s["params_after"])
    assert summary["fc3"]["params_after"] == summary["fc3"]["params_before"]
    assert "ADNTNLinear" in repr(new) and "dense 8,192" in repr(new)
    y = torch.randint(0, 10, (32,))
    b, a = adam_lowers_loss(new, x, y)
    assert a < b


def test_compress_lenet5():
    torch.manual_seed(0)
    model = LeNet5()
    before = snapshot(model)
    new = compress_model(model, topology="ttn", bond_dim=3)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(type(getattr(model, n)) in (nn.Conv2d, nn.Linear)
               for n in ("conv1", "conv2", "fc1", "fc2", "fc3"))
    assert isinstance(new.conv1, nn.Conv2d)  # too small
    assert isinstance(new.conv2, ADNTNConv2d)
    assert isinstance(new.fc1, ADNTNLinear) and isinstance(new.fc2, ADNTNLinear)
    assert n_params(new) < n_params(model)
    replaced = {s["name"] for s in new.adntn_summary if s["params_after"] < s["params_before"]}
    assert replaced == {"conv2", "fc1", "fc2"}
    conv_entry = next(s for s in new.adntn_summary if s["name"] == "conv2")
    assert conv_entry["kind"] == "Conv2d" and conv_entry["shape"] == (16, 6, 5, 5)
    assert new.conv2.generator.shape == (16, 6 * 25)
    x = torch.randn(16, 1, 28, 28)
    assert new(x).shape == (16, 10)
    y = torch.randint(0, 10, (16,))
    b, a = adam_lowers_loss(new, x, y)
    assert a < b


def test_compress_include_exclude_and_min_params():
    model = LeNet5()
    only = compress_model(model, include=["fc1"], bond_dim=2)
    assert isinstance(only.fc1, ADNTNLinear)
    assert isinstance(only.fc2, nn.Linear) and isinstance(only.conv2, nn.Conv2d)
    assert [s["name"] for s in only.adntn_summary] == ["fc1"]
    no_fc = compress_model(model, exclude=["fc*"], bond_dim=2)
    assert isinstance(no_fc.conv2, ADNTNConv2d)
    assert all(isinstance(getattr(no_fc, n), nn.Linear) for n in ("fc1", "fc2", "fc3"))
    glob = compress_model(model, include=["fc*"], exclude=["fc2"], bond_dim=2)
    assert isinstance(glob.fc1, ADNTNLinear) and isinstance(glob.fc2, nn.Linear)
    none = compress_model(model, min_params=10**6, bond_dim=2)
    assert n_params(none) == n_params(model)
    assert all("kept dense" in s["status"] for s in none.adntn_summary)
    with pytest.raises(ValueError, match="match no Linear/Conv1d/Conv2d") as info:
        compress_model(model, include=["classifier"])
    assert "fc1" in str(info.value)
    with pytest.raises(TypeError, match="nn.Module"):
        compress_model("not a model")


def test_compress_state_dict_round_trip():
    torch.manual_seed(0)
    model = MLP()
    a = compress_model(model, bond_dim=3, seed=0)
    b = compress_model(model, bond_dim=3, seed=1)
    x = torch.randn(8, 64)
    # without gradients every layer takes the cost model's schedule (no timing), so equal
    # weights must give bit-equal outputs
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
        c = copy.deepcopy(a)
        torch.testing.assert_close(a(x), c(x), rtol=0, atol=0)


def test_compress_with_fit_starts_near_the_dense_model():
    torch.manual_seed(0)
    model = MLP()
    fitted = compress_model(model, topology="lowrank", rank=32, fit_steps=1,
                            include=["fc1"])
    s = fitted.adntn_summary[0]
    assert s["name"] == "fc1" and "fit error" in s["status"]
    assert fitted.fc1.fit_error < 1.0
    x = torch.randn(4, 64)
    fresh = compress_model(model, topology="lowrank", rank=32, include=["fc1"])
    with torch.no_grad():
        err_fit = float((fitted.fc1(x) - model.fc1(x)).norm())
        err_fresh = float((fresh.fc1(x) - model.fc1(x)).norm())
    assert err_fit < err_fresh


def test_from_conv_fits_the_dense_kernel():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 16, 5, stride=2, padding=1)
    # rank 16 covers the whole (16, 150) kernel matrix: the SVD fit is exact
    layer = ADNTNConv2d.from_conv(conv, "lowrank", rank=16)
    assert layer.fit_error < 1e-5
    assert layer.stride == (2, 2) and layer.padding == (1, 1)
    x = torch.randn(2, 6, 13, 13)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-4, atol=1e-4)
    new = compress_model(LeNet5(), topology="lowrank", rank=4, fit_steps=1,
                         include=["conv2"])
    assert isinstance(new.conv2, ADNTNConv2d) and new.conv2.fit_error is not None
    assert "fit error" in new.adntn_summary[0]["status"]


def test_conv_kernel_std_matches_dense_conv_init():
    torch.manual_seed(0)
    dense = nn.Conv2d(6, 16, 5)
    for topology, options in [("ttn", {"bond_dim": 3}), ("brickwall", {"depth": 2}),
                              ("mpo", {"bond_dim": 3})]:
        layer = ADNTNConv2d(6, 16, 5, topology=topology, **options)
        ratio = float(layer.weight.detach().std() / dense.weight.detach().std())
        assert abs(ratio - 1.0) < 0.25, (topology, ratio)


def test_auto_schedule_times_close_calls_without_touching_gradients(monkeypatch):
    """When the cost model's two estimates are close, the first training batch of a size
    times both schedules and keeps the faster; the probe runs leave .grad untouched, and
    the layer's output is the same whichever schedule won."""
    import adntn_lab.nn.linear as linear_module

    torch.manual_seed(0)
    layer = ADNTNLinear(256, 256, topology="ttn", bond_dim=4)
    layer.autotune = True
    x = torch.randn(64, 256)
    estimates = layer.generator.cost(64, "auto").estimates
    assert set(estimates) == {"materialize", "fused"}
    monkeypatch.setattr(linear_module, "AUTOTUNE_BAND", 1e9)  # every call counts as close
    measured = []
    original = ADNTNLinear._measure

    def spy(self, x2, schedules):
        choice = original(self, x2, schedules)
        measured.append((tuple(schedules), choice))
        return choice

    monkeypatch.setattr(ADNTNLinear, "_measure", spy)
    y = layer(x)
    assert measured and measured[0][0] == ("materialize", "fused")
    assert layer.schedule_for(64) == measured[0][1]
    assert all(p.grad is None for p in layer.parameters())
    other = "fused" if measured[0][1] == "materialize" else "materialize"
    torch.testing.assert_close(y, layer._run_schedule(x, other), rtol=1e-4, atol=1e-5)
    layer(x)  # a second batch of the same size reuses the choice
    assert len(measured) == 1


def test_auto_schedule_uses_the_model_alone_when_not_training_or_told_so(monkeypatch):
    import adntn_lab.nn.linear as linear_module

    monkeypatch.setattr(linear_module, "AUTOTUNE_BAND", 1e9)

    def refuse(*args):
        raise AssertionError("must not time the schedules here")

    monkeypatch.setattr(ADNTNLinear, "_measure", refuse)
    x = torch.randn(32, 256)
    layer = ADNTNLinear(256, 256, topology="ttn", bond_dim=4)
    layer.autotune = True
    with torch.no_grad():
        layer(x)
    layer.eval()
    layer(torch.randn(16, 256))
    layer.train()
    layer.autotune = False
    layer(torch.randn(8, 256))
    model = {b: layer.generator.cost(b, "auto").schedule for b in (32, 16, 8)}
    assert {b: layer.schedule_for(b) for b in (32, 16, 8)} == model


# ---------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_layers_build_under_no_grad_and_inference_mode(mode):
    import adntn_lab as al

    with mode():
        gen = al.build("ttn", 64, 32, bond_dim=3)  # calibration centres W with a gradient
        lin = ADNTNLinear(64, 32, bond_dim=3)
        conv = ADNTNConv2d(3, 8, 3, bond_dim=2)
        fitted = ADNTNLinear.from_linear(nn.Linear(64, 32), "lowrank", rank=4)
    reference = al.build("ttn", 64, 32, bond_dim=3)
    np.testing.assert_array_equal(gen.weight(), reference.weight())
    for layer in (lin, conv, fitted):
        for p in layer.parameters():
            assert isinstance(p, nn.Parameter) and p.requires_grad and not p.is_inference()
    # ordinary trainable parameters: an optimiser may update them in place
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    before = lin.weight.detach().clone()
    lin(torch.randn(4, 64)).square().sum().backward()
    opt.step()
    assert not torch.equal(lin.weight.detach(), before)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_whole_models_compress_load_and_decompress_under_no_grad_and_inference_mode(
        mode, tmp_path):
    from adntn_lab.nn import decompress_model, load_compressed, save_compressed

    torch.manual_seed(0)
    model, fresh = LeNet5(), LeNet5()  # built outside: their parameters are ordinary tensors
    with mode():
        small = compress_model(model, "mpo", bond_dim=2)
        path = save_compressed(small, tmp_path / "lenet.safetensors")
        loaded = load_compressed(fresh, path)
        dense = decompress_model(small)
    for net in (small, loaded, dense):
        # the copied dense layers too, not only the generated ones: every one trains
        assert all(not p.is_inference() and p.requires_grad for p in net.parameters())
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        before = [p.detach().clone() for p in net.parameters()]
        net(torch.randn(2, 1, 28, 28)).square().mean().backward()
        opt.step()
        assert all(not torch.equal(a, p.detach()) for a, p in zip(before, net.parameters()))


def test_device_and_dtype_arguments_like_nn_linear():
    layer = ADNTNLinear(20, 10, bond_dim=2, device="cpu", dtype=torch.float64)
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    assert {p.device.type for p in layer.parameters()} == {"cpu"}
    with pytest.raises(TypeError, match="floating point"):
        ADNTNLinear(20, 10, dtype=torch.int32)


def test_empty_batch_gives_an_empty_result_like_nn_linear():
    layer = ADNTNLinear(64, 32, bond_dim=3)
    dense = nn.Linear(64, 32)
    for shape in [(0, 64), (2, 0, 64)]:
        x = torch.randn(*shape)
        out = layer(x)
        assert out.shape == dense(x).shape
        out.sum().backward()  # and differentiable, with zero gradients


def test_integer_weight_dtype_is_refused():
    import adntn_lab as al

    gen = al.build("ttn", 32, 16, bond_dim=2)
    for dtype in (np.int32, "int64", torch.int32):
        with pytest.raises(TypeError, match="float dtype"):
            gen.weight(dtype=dtype)
    assert gen.weight(dtype=np.float32).dtype == np.float32


def test_numpy_integer_options_are_accepted():
    import adntn_lab as al

    for family, options in [("ttn", {"bond_dim": np.int64(3)}),
                            ("mera", {"bond_dim": np.int32(2)}),
                            ("mpo", {"bond_dim": np.int64(3)}),
                            ("lowrank", {"rank": np.int64(3)}),
                            ("brickwall", {"depth": np.int64(2)})]:
        plain = {k: int(v) for k, v in options.items()}
        a = al.build(family, 64, 32, **options)
        b = al.build(family, 64, 32, **plain)
        assert a.num_params == b.num_params
        np.testing.assert_array_equal(a.weight(), b.weight())
    with pytest.raises(ValueError, match="bond_dim must be a positive integer"):
        al.build("ttn", 64, 32, bond_dim=3.0)


def test_from_linear_of_a_nan_weight_is_a_clear_error():
    dense = nn.Linear(24, 16)
    with torch.no_grad():
        dense.weight[3, 4] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite entries"):
        ADNTNLinear.from_linear(dense, "ttn", fit_steps=5, bond_dim=2)


def test_float16_layer_fits_in_float32_and_converges():
    torch.manual_seed(0)
    dense = nn.Linear(48, 32)
    with torch.no_grad():  # a rank-1 weight, which an MPO of bond dimension 8 fits well
        dense.weight.copy_(0.1 * torch.randn(32, 1) @ torch.randn(1, 48))
    errors = {}
    for dtype in (torch.float32, torch.float16):
        layer = ADNTNLinear.from_linear(dense.to(dtype), "mpo", fit_steps=60, bond_dim=8)
        assert {p.dtype for p in layer.parameters()} == {dtype}
        errors[dtype] = layer.fit_error
    start = ADNTNLinear.from_linear(dense.float(), "mpo", fit_steps=0, bond_dim=8).fit_error
    assert errors[torch.float16] < 0.7 * start
    # the half-precision result is the float32 fit, rounded
    assert errors[torch.float16] == pytest.approx(errors[torch.float32], abs=0.02)


def test_bad_kernel_sizes_are_refused():
    for bad in (-1, 0, (3, -2), 2.5):
        with pytest.raises(ValueError, match="kernel_size must be a positive integer"):
            ADNTNConv2d(3, 8, bad)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        ADNTNConv2d(3, 8, 3, stride=0)
    with pytest.raises(ValueError, match="padding must be a non-negative integer"):
        ADNTNConv2d(3, 8, 3, padding=-1)
