"""Reference models: output shapes, layer names and sizes, adaptation to the dataset."""

from __future__ import annotations

import pytest
import torch

from adntn_lab.models import FC2, LeNet5, SmallVGG, WideMLP, build_model


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_fc2_shapes_and_count():
    m = FC2()
    assert m.fc1.weight.shape == (256, 784) and m.fc2.weight.shape == (10, 256)
    assert n_params(m) == 784 * 256 + 256 + 256 * 10 + 10
    assert m(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert FC2(64, 32, 3)(torch.randn(2, 64)).shape == (2, 3)


def test_lenet5_classic_size():
    m = LeNet5()
    assert m.fc1.in_features == 16 * 5 * 5
    # LeNet-5 for 28x28 MNIST with a padded first convolution: 61,706 parameters
    conv = (6 * 25 + 6) + (16 * 6 * 25 + 16)
    fc = (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert n_params(m) == conv + fc == 61706
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("size,channels", [(8, 1), (16, 1), (32, 3), ((12, 20), 1)])
def test_lenet5_adapts_to_image_size(size, channels):
    m = LeNet5(in_channels=channels, num_classes=7, input_size=size)
    h, w = (size, size) if isinstance(size, int) else size
    out = m(torch.randn(2, channels, h, w))
    assert out.shape == (2, 7)
    assert m.fc1.in_features == 16 * m.feature_shape[1] * m.feature_shape[2] > 0


def test_small_vgg():
    m = SmallVGG()
    assert m(torch.randn(4, 3, 32, 32)).shape == (4, 10)
    assert m.fc1.in_features == 128 * 4 * 4
    names = dict(m.named_modules())
    assert {"features.conv1_1", "features.conv3_2", "fc1", "fc2", "fc3"} <= set(names)
    assert SmallVGG(num_classes=5, in_channels=1, input_size=8)(torch.randn(2, 1, 8, 8)).shape == (
        2,
        5,
    )


def test_build_model_for_datasets():
    digits = {"input_shape": (1, 8, 8), "num_classes": 10}
    fc = build_model("fc2", digits, hidden=32)
    assert fc.fc1.in_features == 64 and fc.fc1.out_features == 32
    assert build_model("lenet5", digits)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert (
        build_model("vgg", {"input_shape": (3, 32, 32), "num_classes": 10}).fc3.out_features == 10
    )
    assert build_model("fc2", {"input_shape": (784,), "num_classes": 10}).fc1.in_features == 784


def test_build_model_errors():
    with pytest.raises(ValueError, match="fc2, lenet5, vgg"):
        build_model("resnet", {"input_shape": (1, 8, 8), "num_classes": 10})
    with pytest.raises(ValueError, match="flatten=False"):
        build_model("lenet5", {"input_shape": (64,), "num_classes": 10})
    with pytest.raises(TypeError, match="input_shape"):
        build_model("fc2", object())
    with pytest.raises(ValueError, match="at least 4x4"):
        LeNet5(input_size=3)
    with pytest.raises(ValueError, match="positive"):
        FC2(hidden=0)


def test_models_backpropagate():
    for m, x in (
        (FC2(64, 16), torch.randn(4, 64)),
        (LeNet5(input_size=8), torch.randn(4, 1, 8, 8)),
    ):
        m(x).sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_wide_mlp_shapes_count_and_forward():
    m = WideMLP()
    assert m.fc1.weight.shape == (4096, 784) and m.fc2.weight.shape == (4096, 4096)
    assert m.fc3.weight.shape == (10, 4096)
    small = WideMLP(12, 8, 3)
    assert n_params(small) == 12 * 8 + 8 + 8 * 8 + 8 + 8 * 3 + 3
    x = torch.randn(5, 12)
    # reference: the same three affine maps with ReLU written out by hand
    h = torch.relu(x @ small.fc1.weight.T + small.fc1.bias)
    h = torch.relu(h @ small.fc2.weight.T + small.fc2.bias)
    ref = h @ small.fc3.weight.T + small.fc3.bias
    torch.testing.assert_close(small(x), ref)
    built = build_model("wide_mlp", {"input_shape": (1, 8, 8), "num_classes": 4}, hidden=16)
    assert isinstance(built, WideMLP) and built.fc1.weight.shape == (16, 64)
    assert built(torch.randn(2, 1, 8, 8)).shape == (2, 4)
    with pytest.raises(ValueError, match="positive"):
        WideMLP(hidden=0)


def test_wide_mlp_runs_compress_both_hidden_layers():
    from adntn_lab.nn import ADNTNLinear
    from adntn_lab.train.config import RunConfig
    from adntn_lab.train.strategies import build_run_model

    info = {"input_shape": (1, 8, 8), "num_classes": 10}
    cfg = RunConfig(model="wide-mlp", family="ttn", bond_dim=2, hidden=32)
    assert cfg.compress_patterns == ["fc1", "fc2"]
    m = build_run_model(cfg, info)
    assert isinstance(m.fc1, ADNTNLinear) and isinstance(m.fc2, ADNTNLinear)
    assert isinstance(m.fc3, torch.nn.Linear) and m.fc1.weight.shape == (32, 64)
    assert m(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    with pytest.raises(ValueError, match="fc2, wide-mlp"):
        build_run_model(RunConfig(model="lenet5", hidden=32), info)
