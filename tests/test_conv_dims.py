"""Generated 1-D and 3-D convolutions (ADNTNConv1d, ADNTNConv3d) against torch's own, in
compress_model, and through save/load."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from adntn_lab.nn import (  # noqa: E402
    ADNTNConv1d,
    ADNTNConv2d,
    ADNTNConv3d,
    compress_model,
    decompress_model,
    load_compressed,
    read_header,
    save_compressed,
)

DIMS = {1: (ADNTNConv1d, nn.Conv1d, (11,)), 3: (ADNTNConv3d, nn.Conv3d, (5, 6, 7))}

VARIANTS = [
    dict(in_channels=3, out_channels=5, kernel_size=3),
    dict(in_channels=6, out_channels=4, kernel_size=3, groups=2, padding=1, stride=2),
    dict(in_channels=4, out_channels=8, kernel_size=3, groups=4, padding="same", dilation=2),
    dict(in_channels=3, out_channels=4, kernel_size=2, padding="valid"),
    dict(in_channels=3, out_channels=5, kernel_size=3, padding=2, padding_mode="reflect"),
    dict(in_channels=4, out_channels=4, kernel_size=3, groups=2, padding=1,
         padding_mode="replicate"),
    dict(in_channels=3, out_channels=6, kernel_size=3, padding="same", padding_mode="circular"),
    # an even kernel pads one more on the right
    dict(in_channels=3, out_channels=4, kernel_size=2, padding="same", padding_mode="reflect"),
]


def _ids(v):
    return "-".join(f"{k}={v[k]}" for k in ("groups", "padding", "padding_mode", "stride")
                    if k in v) or "plain"


@pytest.mark.parametrize("ndim", sorted(DIMS))
@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_generated_conv_equals_torch_conv_holding_the_generated_kernel(ndim, variant):
    cls, dense_cls, spatial = DIMS[ndim]
    torch.manual_seed(0)
    layer = cls(dtype=torch.float64, bond_dim=2, **variant)
    cin, cout, g = variant["in_channels"], variant["out_channels"], variant.get("groups", 1)
    k = variant["kernel_size"]
    W = layer.export_generator().weight()  # numpy, (C_out, C_in/groups * k**ndim)
    assert W.shape == (cout, cin // g * k**ndim)
    assert layer.weight.shape == (cout, cin // g) + (k,) * ndim
    dense = dense_cls(dtype=torch.float64, **variant)
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(W).reshape(dense.weight.shape))
        dense.bias.copy_(layer.bias)
    x = torch.randn(2, cin, *spatial, dtype=torch.float64)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-10, atol=1e-12)
    back = layer.to_dense()
    assert type(back) is dense_cls
    assert (back.groups, back.padding_mode, back.padding, back.stride) == (
        dense.groups, dense.padding_mode, dense.padding, dense.stride)
    torch.testing.assert_close(back(x), dense(x), rtol=1e-10, atol=1e-12)
    layer(x).square().sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_3d_padding_per_axis_lands_on_the_right_axes(mode):
    torch.manual_seed(0)
    options = dict(kernel_size=(1, 3, 2), padding=(0, 1, 2), dilation=(1, 1, 2),
                   padding_mode=mode)
    layer = ADNTNConv3d(2, 3, dtype=torch.float64, bond_dim=2, **options)
    dense = nn.Conv3d(2, 3, dtype=torch.float64, **options)
    with torch.no_grad():
        dense.weight.copy_(layer.weight)
        dense.bias.copy_(layer.bias)
    x = torch.randn(1, 2, 3, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("ndim", sorted(DIMS))
def test_from_conv_fits_the_kernel_and_refuses_another_dimension(ndim):
    cls, dense_cls, spatial = DIMS[ndim]
    torch.manual_seed(0)
    dense = dense_cls(6, 4, 3, groups=2, padding=1)
    layer = cls.from_conv(dense, "lowrank", rank=4, fit_steps=300, lr=0.05)
    assert layer.fit_error < 1e-3  # rank 4 holds a 4-row matrix exactly
    x = torch.randn(2, 6, *spatial)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-3, atol=1e-3)
    with pytest.raises(TypeError, match=f"needs an nn.Conv{ndim}d, got Conv2d"):
        cls.from_conv(nn.Conv2d(6, 4, 3))
    with pytest.raises(TypeError, match=f"needs an nn.Conv2d, got Conv{ndim}d"):
        ADNTNConv2d.from_conv(dense)


@pytest.mark.parametrize("ndim", sorted(DIMS))
def test_bad_shapes_say_how_many_numbers_a_tuple_needs(ndim):
    cls = DIMS[ndim][0]
    with pytest.raises(ValueError, match=f"kernel_size must be a positive integer or a tuple "
                                         f"of {ndim} of them, got \\(3, 3, 3, 3\\)"):
        cls(4, 4, (3, 3, 3, 3))
    with pytest.raises(ValueError, match="groups=3 must divide both in_channels=4"):
        cls(4, 6, 3, groups=3)


class AudioNet(nn.Module):
    """A 1-D front end (wav2vec2/Whisper-style) and a 3-D video stem on one model."""

    def __init__(self):
        super().__init__()
        self.wave = nn.Sequential(nn.Conv1d(1, 32, 10, stride=5), nn.GELU(),
                                  nn.Conv1d(32, 32, 3, stride=2, padding=1, groups=4),
                                  nn.GELU(), nn.Conv1d(32, 32, 5, padding="same",
                                                       padding_mode="reflect"))
        self.video = nn.Conv3d(3, 16, (2, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.head = nn.Linear(32 + 16, 8)

    def forward(self, wave, clip):
        a = self.wave(wave).mean(-1)
        v = self.video(clip).mean((-3, -2, -1))
        return self.head(torch.cat([a, v], -1))


def test_compress_model_covers_1d_and_3d_convolutions_and_saves_them(tmp_path):
    torch.manual_seed(0)
    model = AudioNet()
    small = compress_model(model, "mpo", bond_dim=3, min_params=0)
    rows = {r["name"]: r for r in small.adntn_summary}
    assert {n for n, r in rows.items() if r.get("family")} == {
        "wave.0", "wave.2", "wave.4", "video", "head"}
    assert rows["wave.2"]["kind"] == "Conv1d" and rows["video"]["kind"] == "Conv3d"
    assert rows["video"]["params_before"] == 16 * 3 * 2 * 3 * 3
    assert isinstance(small.wave[2], ADNTNConv1d) and small.wave[2].groups == 4
    assert isinstance(small.video, ADNTNConv3d)
    wave, clip = torch.randn(2, 1, 400), torch.randn(2, 3, 4, 16, 16)
    out = small(wave, clip)
    assert out.shape == (2, 8)
    out.square().sum().backward()
    small.eval()
    path = save_compressed(small, tmp_path / "audio.safetensors")
    kinds = {e["name"]: e["kind"] for e in read_header(path)["layers"]}
    assert kinds == {"wave.0": "nn_conv1d", "wave.2": "nn_conv1d", "wave.4": "nn_conv1d",
                     "video": "conv3d", "head": "linear"}
    fresh = load_compressed(AudioNet(), path).eval()
    with torch.no_grad():
        assert torch.equal(fresh(wave, clip), small(wave, clip))
        dense = decompress_model(small).eval()
        assert type(dense.video) is nn.Conv3d and type(dense.wave[2]) is nn.Conv1d
        torch.testing.assert_close(dense(wave, clip), small(wave, clip), rtol=1e-5, atol=1e-6)

    class Swapped(AudioNet):
        def __init__(self):
            super().__init__()
            self.video = nn.Conv2d(3, 16, 3)

    with pytest.raises(ValueError, match="module 'video' is a Conv2d, but the file holds a "
                                         "generated nn.Conv3d"):
        load_compressed(Swapped(), path)
