"""compress_model on real architectures: transformers' GPT-2 and BERT (small configs, no
download), nn.TransformerEncoder with generated attention, ties, shared modules, patterns."""

from __future__ import annotations

import math
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from adntn_lab.nn import (  # noqa: E402
    ADNTNConv1D,
    ADNTNLinear,
    ADNTNMultiheadAttention,
    compress_model,
)


def lower_loss(model, loss_fn, steps=5, lr=1e-2):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        losses.append(float(loss_fn(model)))
    return losses


# ---------------------------------------------------------------------------- transformers
@pytest.fixture(scope="module")
def transformers():
    mod = pytest.importorskip("transformers")
    mod.logging.set_verbosity_error()
    return mod


def small_gpt2(transformers):
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=96,
                                  n_positions=32, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def test_gpt2_every_projection_compressed_tie_kept(transformers):
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    model = small_gpt2(transformers)
    new = compress_model(model, "ttn", bond_dim=4)
    projections = [n for n, m in model.named_modules() if isinstance(m, Conv1D)]
    assert len(projections) == 8
    for name in projections:
        layer = new.get_submodule(name)
        dense = model.get_submodule(name)
        assert isinstance(layer, ADNTNConv1D), name
        # Conv1D's layout: weight (nx, nf), y = x @ weight + bias
        assert tuple(layer.weight.shape) == tuple(dense.weight.shape)
    rows = {r["name"]: r for r in new.adntn_summary}
    assert rows["lm_head"]["reason"].startswith("weight tied to transformer.wte.weight")
    assert new.lm_head.weight is new.transformer.wte.weight  # the tie survives
    assert isinstance(new.lm_head, nn.Linear)
    assert rows["transformer.wte"]["kind"] == "Embedding"
    assert "unsupported module type Embedding" in rows["transformer.wte"]["status"]
    assert rows["transformer.h.0.attn.c_attn"]["family"] == "ttn"
    assert rows["transformer.h.0.attn.c_attn"]["shape"] == (64, 192)

    ids = torch.randint(0, 96, (2, 12))
    assert new(ids).logits.shape == (2, 12, 96)
    losses = lower_loss(new, lambda m: m(ids, labels=ids).loss)
    assert losses[-1] < losses[0]


def test_gpt2_conv1d_matches_its_transposed_linear(transformers):
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    dense = Conv1D(48, 40)
    layer = ADNTNConv1D.from_conv1d(dense, "lowrank", rank=40)  # full rank: exact SVD fit
    assert layer.fit_error < 1e-5
    x = torch.randn(3, 5, 40)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), dense(x), rtol=1e-4, atol=1e-5)
        w = layer.generated()  # (nf, nx) = (out, in)
        torch.testing.assert_close(layer(x), x @ w.t() + layer.bias, rtol=0, atol=1e-6)
    back = layer.to_dense()
    assert type(back) is Conv1D and tuple(back.weight.shape) == (40, 48)
    with torch.no_grad():
        torch.testing.assert_close(back(x), layer(x), rtol=1e-6, atol=1e-6)


def test_bert_every_linear_compressed_decoder_tie_reported(transformers):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                  intermediate_size=128, vocab_size=80,
                                  max_position_embeddings=32)
    model = transformers.BertForMaskedLM(cfg)
    new = compress_model(model, "mpo", bond_dim=4, min_params=0)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    tied = "cls.predictions.decoder"
    for name in linears:
        kind = ADNTNLinear if name != tied else nn.Linear
        assert isinstance(new.get_submodule(name), kind), name
    row = next(r for r in new.adntn_summary if r["name"] == tied)
    assert "bert.embeddings.word_embeddings.weight" in row["reason"]
    assert new.cls.predictions.decoder.weight is new.bert.embeddings.word_embeddings.weight

    ids = torch.randint(0, 80, (2, 10))
    labels = ids.clone()
    assert new(ids).logits.shape == (2, 10, 80)
    losses = lower_loss(new, lambda m: m(ids, labels=labels).loss)
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------------------- attention
def reference_attention(q_in, k_in, v_in, wq, wk, wv, bq, bk, bv, wo, bo, num_heads,
                        attn_mask=None, key_padding_mask=None):
    """Multi-head attention written out by hand (sequence-first inputs (L, N, E)); returns
    the output and the head-averaged weights (N, L, S)."""
    L, N, E = q_in.shape
    S = k_in.shape[0]
    hd = E // num_heads
    q = (q_in @ wq.T + bq).reshape(L, N, num_heads, hd).permute(1, 2, 0, 3)
    k = (k_in @ wk.T + bk).reshape(S, N, num_heads, hd).permute(1, 2, 0, 3)
    v = (v_in @ wv.T + bv).reshape(S, N, num_heads, hd).permute(1, 2, 0, 3)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # (N, H, L, S)
    if attn_mask is not None:
        scores = scores.masked_fill(attn_mask, float("-inf"))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    p = scores.softmax(-1)
    out = (p @ v).permute(2, 0, 1, 3).reshape(L, N, E)
    return out @ wo.T + bo, p.mean(1)


@pytest.mark.parametrize("batch_first", [False, True])
def test_generated_attention_equals_hand_written_attention(batch_first):
    torch.manual_seed(0)
    E, H, L, N = 32, 4, 6, 3
    attn = ADNTNMultiheadAttention(E, H, batch_first=batch_first, bond_dim=3,
                                   dtype=torch.float64)
    with torch.no_grad():
        attn.in_proj_bias.normal_()
        attn.out_proj.bias.normal_()
    x = torch.randn(L, N, E, dtype=torch.float64)
    causal = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
    padding = torch.zeros(N, L, dtype=torch.bool)
    padding[0, -2:] = True
    w = attn.in_proj.generated().detach()
    b = attn.in_proj_bias.detach()
    expect, expect_w = reference_attention(
        x, x, x, w[:E], w[E:2 * E], w[2 * E:], b[:E], b[E:2 * E], b[2 * E:],
        attn.out_proj.generated().detach(), attn.out_proj.bias.detach(), H,
        attn_mask=causal, key_padding_mask=padding)
    inp = x.transpose(0, 1) if batch_first else x
    out, weights = attn(inp, inp, inp, attn_mask=causal, key_padding_mask=padding)
    out = out.transpose(0, 1) if batch_first else out
    torch.testing.assert_close(out, expect, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(weights, expect_w, rtol=1e-10, atol=1e-12)
    _, none = attn(inp, inp, inp, need_weights=False)
    assert none is None
    # gradients reach every core of the packed in-projection and of out_proj
    out.square().sum().backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in attn.parameters())


def test_attention_with_kdim_vdim_generates_separate_projections():
    torch.manual_seed(0)
    E, H = 32, 4
    attn = ADNTNMultiheadAttention(E, H, kdim=16, vdim=24, bond_dim=2, dtype=torch.float64)
    assert set(attn.projections()) == {"q_proj", "k_proj", "v_proj", "out_proj"}
    assert attn.in_proj_weight is None
    assert attn.k_proj.generator.shape == (E, 16) and attn.v_proj.generator.shape == (E, 24)
    # separate projections start from different cores (seeds seed, seed+1, seed+2)
    assert not torch.equal(attn.q_proj_weight, attn.out_proj.weight)
    q = torch.randn(5, 2, E, dtype=torch.float64)
    k = torch.randn(7, 2, 16, dtype=torch.float64)
    v = torch.randn(7, 2, 24, dtype=torch.float64)
    b = attn.in_proj_bias.detach()
    expect, _ = reference_attention(
        q, k, v, attn.q_proj_weight.detach(), attn.k_proj_weight.detach(),
        attn.v_proj_weight.detach(), b[:E], b[E:2 * E], b[2 * E:],
        attn.out_proj.weight.detach(), attn.out_proj.bias.detach(), H)
    out, _ = attn(q, k, v)
    torch.testing.assert_close(out, expect, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch_first", [False, True])
def test_transformer_encoder_with_generated_attention(batch_first):
    """compress_model replaces nn.MultiheadAttention inside nn.TransformerEncoder; the
    encoder equals one whose attention holds the generated weights densely, in training and
    in inference (where PyTorch takes its fused fast path)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=batch_first)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    new = compress_model(encoder, "ttn", bond_dim=3, include=["layers.*.self_attn"])
    for i in range(2):
        assert isinstance(new.layers[i].self_attn, ADNTNMultiheadAttention)
        assert isinstance(new.layers[i].linear1, nn.Linear)
    rows = new.adntn_summary
    assert [r["name"] for r in rows] == ["layers.0.self_attn", "layers.1.self_attn"]
    assert rows[0]["shape"] == ((96, 32), (32, 32))
    assert rows[0]["params_before"] == 4 * 32 * 32
    reference = compress_model(encoder, "ttn", bond_dim=3, include=["layers.*.self_attn"])
    for i in range(2):
        reference.layers[i].self_attn = new.layers[i].self_attn.to_dense()
    x = torch.randn(3, 5, 32)
    padding = torch.zeros(3 if batch_first else 5, 5 if batch_first else 3, dtype=torch.bool)
    padding[0, -1] = True
    torch.testing.assert_close(new(x, src_key_padding_mask=padding),
                               reference(x, src_key_padding_mask=padding), rtol=1e-5,
                               atol=1e-6)
    new.eval()
    reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(new(x, src_key_padding_mask=padding),
                                   reference(x, src_key_padding_mask=padding), rtol=1e-5,
                                   atol=1e-6)
    new.train()
    losses = lower_loss(new, lambda m: m(x).square().mean(), steps=3)
    assert losses[-1] < losses[0]


def test_attention_fit_copies_biases_and_fits_projections():
    torch.manual_seed(0)
    dense = nn.MultiheadAttention(16, 2, add_bias_kv=True)
    with torch.no_grad():
        dense.in_proj_bias.normal_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = ADNTNMultiheadAttention.from_attention(dense, "lowrank", rank=16, fit_steps=1)
    assert layer.fit_error < 1e-5  # full rank: exact
    torch.testing.assert_close(layer.in_proj_bias, dense.in_proj_bias, rtol=0, atol=0)
    torch.testing.assert_close(layer.bias_k, dense.bias_k, rtol=0, atol=0)
    x = torch.randn(4, 2, 16)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, x, x)[0], dense(x, x, x)[0], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- model surgery
class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(64, 64)
        self.dec = self.enc  # one module, two names
        self.emb = nn.Embedding(10, 64)
        self.head = nn.Linear(64, 10, bias=False)
        self.head.weight = self.emb.weight  # a tie between two modules
        self.norm = nn.LayerNorm(64)
        self.depthwise = nn.Conv2d(4, 4, 3, groups=4)

    def forward(self, x):
        return self.head(self.norm(self.dec(torch.relu(self.enc(x)))))


def test_shared_module_replaced_once_under_every_name_and_tie_kept():
    torch.manual_seed(0)
    model = Shared()
    new = compress_model(model, "ttn", bond_dim=3, min_params=0)
    assert isinstance(new.enc, ADNTNLinear) and new.enc is new.dec
    assert isinstance(new.head, nn.Linear) and new.head.weight is new.emb.weight
    rows = {r["name"]: r for r in new.adntn_summary}
    assert rows["enc"]["aliases"] == ["dec"] and "dec" not in rows
    assert "also dec" in rows["enc"]["status"]
    assert rows["head"]["reason"].startswith("weight tied to emb.weight")
    assert rows["norm"]["reason"] == "unsupported module type LayerNorm"
    # a 4-channel depthwise kernel has 36 weights: no generator is smaller
    assert rows["depthwise"]["reason"].startswith("generator has ")
    # the generated layer's parameters are counted once
    assert sum(p.numel() for p in new.parameters()) < sum(p.numel() for p in model.parameters())
    assert new(torch.randn(2, 64)).shape == (2, 10)


def test_lazy_modules_are_refused_until_a_forward_pass_sizes_them():
    model = nn.Sequential(nn.LazyConv2d(16, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(ValueError, match=r"but 0 \(LazyConv2d\), 3 \(LazyLinear\) still "
                                         r"hold uninitialised lazy parameters; run one "
                                         r"forward pass"):
        compress_model(model)
    model(torch.randn(1, 3, 8, 8))  # now a Conv2d(3, 16, 3) and a Linear(576, 10)
    new = compress_model(model, "mpo", bond_dim=2)
    assert {r["name"]: r["shape"] for r in new.adntn_summary} == {"0": (16, 3, 3, 3),
                                                                  "3": (10, 576)}
    assert new(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_patterns_match_full_names_and_unknown_patterns_suggest_close_ones(capsys):
    model = Shared()
    with pytest.raises(ValueError, match="match no Linear/Conv1d/Conv2d") as info:
        compress_model(model, include=["encc"])
    assert "'enc'" in str(info.value)  # the close match
    with pytest.raises(ValueError, match=r"exclude pattern\(s\) \['hed'\]") as info:
        compress_model(model, exclude=["hed"], min_params=0)
    assert "head" in str(info.value)
    # fnmatch on full names: "e*" matches enc (and its alias dec, by the same module) and emb
    new = compress_model(model, include=["e*"], min_params=0, bond_dim=2, verbose=True)
    printed = capsys.readouterr().out
    assert [r["name"] for r in new.adntn_summary] == ["enc", "emb"]
    assert "enc" in printed and "total" in printed and "Embedding" in printed
    assert str(new.adntn_summary) == printed.rstrip("\n")


def test_oversized_layer_is_refused_naming_it():
    from adntn_lab.resources import ResourceLimitError

    model = nn.Sequential(nn.Linear(64, 64))
    with pytest.raises(ResourceLimitError, match="layer '0': "):
        compress_model(model, "ttn", bond_dim=3, min_params=0, memory_budget=1024)
