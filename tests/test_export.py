"""Deployment: to_dense, decompress_model, save/load (bit-exact), torch.export, ONNX,
autocast."""

from __future__ import annotations

import importlib.util
import json

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from adntn_lab.models import FC2, LeNet5  # noqa: E402
from adntn_lab.nn import (  # noqa: E402
    ADNTNConv2d,
    ADNTNLinear,
    ADNTNMultiheadAttention,
    compress_model,
    decompress_model,
    generated_modules,
    load_compressed,
    read_header,
    save_compressed,
)

FAMILIES = [("ttn", {"bond_dim": 3}), ("attn", {"bond_dim": 2}), ("mera", {"bond_dim": 2}),
            ("brickwall", {"depth": 2}), ("mpo", {"bond_dim": 3}), ("lowrank", {"rank": 4})]


def fc2(seed=0):
    torch.manual_seed(seed)
    return FC2(in_features=64, hidden=48, num_classes=10)


class AttentionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.attn(x, x, x, need_weights=False)[0].mean(1))


def perturb(model):
    """Move every parameter off its initial value, as training would."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


# ---------------------------------------------------------------------------- dense copies
@pytest.mark.parametrize("family,options", FAMILIES, ids=[f for f, _ in FAMILIES])
def test_to_dense_linear_and_conv_equal_outputs(family, options):
    torch.manual_seed(0)
    layer = ADNTNLinear(40, 24, topology=family, dtype=torch.float64, **options)
    dense = layer.to_dense()
    assert type(dense) is nn.Linear and dense.weight.dtype == torch.float64
    x = torch.randn(5, 40, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(dense(x), layer(x), rtol=1e-12, atol=1e-12)
    conv = ADNTNConv2d(3, 8, 3, stride=2, padding=1, topology=family, dtype=torch.float64,
                       **options)
    dconv = conv.to_dense()
    assert type(dconv) is nn.Conv2d and dconv.stride == (2, 2)
    img = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(dconv(img), conv(img), rtol=1e-12, atol=1e-12)


def test_decompress_model_equals_compressed_model():
    torch.manual_seed(0)
    model = compress_model(LeNet5(), "ttn", bond_dim=3)
    net = AttentionNet()
    att = compress_model(net, "ttn", bond_dim=3)
    assert isinstance(att.attn, ADNTNMultiheadAttention)
    for compressed, x in ((model, torch.randn(2, 1, 28, 28)), (att, torch.randn(2, 5, 32))):
        dense = decompress_model(compressed)
        assert not generated_modules(dense) and generated_modules(compressed)
        assert not hasattr(dense, "adntn_summary")
        with torch.no_grad():
            torch.testing.assert_close(dense(x), compressed(x), rtol=1e-5, atol=1e-6)
    assert type(decompress_model(att).attn) is nn.MultiheadAttention


# ---------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("family,options", FAMILIES, ids=[f for f, _ in FAMILIES])
def test_save_load_is_bit_exact(tmp_path, family, options):
    model = perturb(compress_model(fc2(), family, min_params=0, **options))
    model.eval()
    path = save_compressed(model, tmp_path / "fc2.safetensors")
    header = read_header(path)
    entry = header["layers"][0]
    assert entry["name"] == "fc1" and entry["kind"] == "linear"
    spec = entry["generators"][""]
    assert spec["family"] == family and spec["activations"]
    assert spec["in_modes"] == list(model.fc1.generator.tensorization.in_modes)
    fresh = fc2(seed=1).eval()
    assert load_compressed(fresh, path) is fresh
    assert type(fresh.fc1) is type(model.fc1)
    x = torch.randn(7, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    assert torch.equal(fresh.fc1.generated(), model.fc1.generated())


def test_save_load_generated_layers_only_keeps_the_rest_of_the_fresh_model(tmp_path):
    model = perturb(compress_model(fc2(), "ttn", include=["fc1"], bond_dim=3)).eval()
    path = save_compressed(model, tmp_path / "fc1.safetensors", include_dense=False)
    header = read_header(path)
    assert header["include_dense"] is False
    fresh = fc2(seed=0).eval()
    dense_fc2 = fresh.fc2.weight.detach().clone()
    load_compressed(fresh, path)
    assert torch.equal(fresh.fc2.weight, dense_fc2)  # untouched
    assert torch.equal(fresh.fc1.generated(), model.fc1.generated())


def test_save_load_attention_conv_and_shared_modules(tmp_path):
    torch.manual_seed(0)
    net = perturb(compress_model(AttentionNet(), "mera", bond_dim=2, min_params=0)).eval()
    path = save_compressed(net, tmp_path / "att.safetensors")
    fresh = AttentionNet().eval()
    load_compressed(fresh, path)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))
    lenet = perturb(compress_model(LeNet5(), "mpo", bond_dim=2)).eval()
    path = save_compressed(lenet, tmp_path / "lenet.safetensors")
    fresh = LeNet5().eval()
    load_compressed(fresh, path)
    img = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(fresh(img), lenet(img))

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(32, 32)
            self.b = self.a

        def forward(self, x):
            return self.b(self.a(x))

    shared = perturb(compress_model(Shared(), "ttn", bond_dim=2, min_params=0)).eval()
    path = save_compressed(shared, tmp_path / "shared.safetensors")
    assert read_header(path)["layers"][0]["aliases"] == ["b"]
    fresh = load_compressed(Shared(), path)
    assert fresh.a is fresh.b and isinstance(fresh.a, ADNTNLinear)
    v = torch.randn(3, 32)
    with torch.no_grad():
        assert torch.equal(fresh(v), shared(v))


def test_load_refuses_another_architecture_naming_the_module(tmp_path):
    model = compress_model(fc2(), "ttn", bond_dim=3, min_params=0)
    path = save_compressed(model, tmp_path / "fc2.safetensors")
    with pytest.raises(ValueError, match="module 'fc1' does not match the file: in_features is "
                                         "32 in the model but 64 in the file"):
        load_compressed(FC2(in_features=32, hidden=48), path)
    with pytest.raises(ValueError, match="at 'fc1', but the model has no module"):
        load_compressed(nn.Sequential(nn.Linear(64, 48)), path)

    class Renamed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Conv2d(64, 48, 1)

    with pytest.raises(ValueError, match="module 'fc1' is a Conv2d, but the file holds a "
                                         "generated nn.Linear"):
        load_compressed(Renamed(), path)
    with pytest.raises(ValueError, match="already generated"):
        load_compressed(model, path)
    with pytest.raises(ValueError, match="no generated layer"):
        save_compressed(fc2(), tmp_path / "dense.safetensors")
    other = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a compressed-model file"):
        load_compressed(fc2(), other)


def _grouped_net(groups=4, padding_mode="reflect", stride=1):
    return nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, padding_mode=padding_mode),
                         nn.ReLU(),
                         nn.Conv2d(16, 16, 3, stride=stride, padding=1, groups=groups),
                         nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False))


def test_save_load_grouped_and_padded_convolutions_bit_exact(tmp_path):
    torch.manual_seed(0)
    net = perturb(compress_model(_grouped_net(), "ttn", bond_dim=2, min_params=0)).eval()
    kinds = {r["name"]: r.get("family") for r in net.adntn_summary}
    assert kinds == {"0": "ttn", "2": "ttn", "4": "ttn"}
    assert (net[2].groups, net[0].padding_mode, net[4].groups) == (4, "reflect", 16)
    path = save_compressed(net, tmp_path / "grouped.safetensors")
    fresh = load_compressed(_grouped_net(), path).eval()
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))
    assert (fresh[2].groups, fresh[0].padding_mode) == (4, "reflect")
    with pytest.raises(ValueError, match="module '2' does not match the file: groups is 2 in "
                                         "the model but 4 in the file"):
        load_compressed(_grouped_net(groups=2), path)
    with pytest.raises(ValueError, match="module '0' does not match the file: padding_mode is "
                                         "'zeros' in the model but 'reflect' in the file"):
        load_compressed(_grouped_net(padding_mode="zeros"), path)
    with pytest.raises(ValueError, match=r"module '2' does not match the file: stride is "
                                         r"\[2, 2\] in the model but \[1, 1\] in the file"):
        load_compressed(_grouped_net(stride=2), path)
    # a dense copy of the whole network computes the same function
    dense = decompress_model(net).eval()
    assert type(dense[2]) is nn.Conv2d and dense[2].groups == 4
    with torch.no_grad():
        torch.testing.assert_close(dense(x), net(x), rtol=1e-5, atol=1e-6)


def test_save_refuses_unnamed_activation(tmp_path):
    def shifted(x):
        return x - 0.1

    model = compress_model(fc2(), "ttn", bond_dim=2, min_params=0, activation=shifted)
    with pytest.raises(ValueError, match="layer 'fc1'.*Python callables"):
        save_compressed(model, tmp_path / "x.safetensors")


def test_gpt2_save_load_bit_exact_and_file_is_small(tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=96,
                                  n_positions=32, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = perturb(compress_model(transformers.GPT2LMHeadModel(cfg), "ttn",
                                   bond_dim=4)).eval()
    path = save_compressed(model, tmp_path / "gpt2.safetensors")
    header = read_header(path)
    assert header["tied"] == {"lm_head.weight": "transformer.wte.weight"}
    assert {e["kind"] for e in header["layers"]} == {"conv1d"}
    fresh = transformers.GPT2LMHeadModel(cfg).eval()
    load_compressed(fresh, path)
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    ids = torch.randint(0, 96, (2, 10))
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, model(ids).logits)
    dense_bytes = sum(v.numel() * v.element_size()
                      for v in transformers.GPT2LMHeadModel(cfg).state_dict().values())
    assert path.stat().st_size < dense_bytes / 3
    json.dumps(header)  # the header is plain JSON


# ---------------------------------------------------------------------------- export
def test_torch_export_of_compressed_model():
    torch.manual_seed(0)
    model = compress_model(LeNet5(), "ttn", bond_dim=3).eval()
    x = torch.randn(2, 1, 28, 28)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-6)
    att = compress_model(AttentionNet(), "brickwall", depth=2).eval()
    y = torch.randn(2, 5, 32)
    program = torch.export.export(att, (y,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(y), att(y), rtol=1e-5, atol=1e-6)


ONNX_MISSING = [m for m in ("onnx", "onnxscript", "onnxruntime")
                if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(bool(ONNX_MISSING), reason=f"the export extra is missing {ONNX_MISSING} "
                                               "(pip install -e .[export])")
@pytest.mark.parametrize("family,options", [("ttn", {"bond_dim": 3}),
                                            ("brickwall", {"depth": 2})])
def test_onnx_export_matches_onnxruntime(tmp_path, family, options):
    import onnxruntime

    torch.manual_seed(0)
    model = compress_model(fc2(), family, min_params=0, **options).eval()
    x = torch.randn(4, 64)
    onnx_program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    path = tmp_path / "fc2.onnx"
    onnx_program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- autocast
@pytest.mark.parametrize("family,options,recompute",
                         [("ttn", {"bond_dim": 3}, "auto"), ("mpo", {"bond_dim": 3}, "lean"),
                          ("brickwall", {"depth": 2}, "lean")])
def test_cpu_autocast_bfloat16_within_tolerance_of_float32(family, options, recompute):
    """bfloat16 keeps 8 bits of mantissa (relative rounding 2^-8 = 0.4%); through a few
    stages the output stays within 5% of float32 and the gradients within 10%."""
    torch.manual_seed(0)
    layer = ADNTNLinear(64, 32, topology=family, schedule="materialize", **options)
    layer.generated.recompute = recompute
    x = torch.randn(8, 64)
    y32 = layer(x)
    y32.square().sum().backward()
    g32 = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = layer(x)
    assert y16.dtype == torch.bfloat16
    y16.float().square().sum().backward()
    rel = float((y16.float() - y32).detach().norm() / y32.detach().norm())
    assert rel < 0.05
    for p, g in zip(layer.parameters(), g32):
        assert p.grad.dtype == torch.float32  # the parameters stay float32
        assert float((p.grad - g).norm() / g.norm()) < 0.1


@pytest.mark.gpu
def test_cuda_autocast_float16_within_tolerance_of_float32():
    torch.manual_seed(0)
    layer = ADNTNLinear(64, 32, topology="ttn", bond_dim=3, device="cuda")
    x = torch.randn(8, 64, device="cuda")
    y32 = layer(x)
    with torch.autocast("cuda", dtype=torch.float16):
        y16 = layer(x)
    assert y16.dtype == torch.float16
    assert float((y16.float() - y32).norm() / y32.norm()) < 0.01
    y16.float().square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


def test_compressed_attention_trains_under_autocast():
    torch.manual_seed(0)
    net = compress_model(AttentionNet(), "ttn", bond_dim=3)
    x, y = torch.randn(4, 5, 32), torch.randint(0, 10, (4,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
