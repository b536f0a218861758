"""DMRG-like local sweeps over MPO layers."""

import numpy as np
import pytest
import torch

from adntn_lab.data import load_dataset
from adntn_lab.models import FC2
from adntn_lab.nn import compress_model
from adntn_lab.train.dmrg import dmrg_sweep, mpo_layers, split_block


def test_split_block_is_exact_without_truncation():
    rng = np.random.default_rng(0)
    block = rng.standard_normal((3, 4, 5, 2))
    for right in (True, False):
        left, rgt = split_block(block, 2, max_bond=100, cutoff=0.0, sweep_right=right)
        assert left.shape[:2] == (3, 4) and rgt.shape[1:] == (5, 2)
        np.testing.assert_allclose(np.tensordot(left, rgt, axes=1), block, atol=1e-12)


def test_split_block_truncates_to_best_low_rank():
    rng = np.random.default_rng(1)
    block = rng.standard_normal((6, 7))
    left, right = split_block(block, 1, max_bond=2, cutoff=0.0, sweep_right=True)
    assert left.shape == (6, 2) and right.shape == (2, 7)
    s = np.linalg.svd(block, compute_uv=False)
    err = np.linalg.norm(left @ right - block)
    np.testing.assert_allclose(err, np.sqrt(np.sum(s[2:] ** 2)), rtol=1e-10)


def test_sweeps_train_and_adapt_ranks():
    torch.manual_seed(0)
    data = load_dataset("digits", flatten=True)
    model = compress_model(FC2(in_features=64, hidden=64), "mpo", include=["fc1"], bond_dim=2,
                           min_params=10)
    layer = mpo_layers(model)["fc1"]
    before = layer.generator.num_params
    history = dmrg_sweep(model, data, sweeps=2, lr=1e-2, bond_dim=5, local_steps=10,
                         progress=False)
    assert len(history.epoch) == 2
    first, last = np.mean(history.step_loss[:10]), np.mean(history.step_loss[-10:])
    assert last < first
    dims = [layer.generator.cores[f"A{k}"].shape[-1] for k in range(2)]
    assert max(dims) <= 5 and layer.generator.num_params > before  # ranks grew from 2
    # the rebuilt layer still agrees with its own generator
    gen = layer.export_generator()
    np.testing.assert_allclose(layer.weight.detach().double().numpy(), gen.weight(), atol=1e-5)
    assert history.test_acc[-1] > 0.5


def test_no_mpo_layer_is_a_clear_error():
    data = load_dataset("digits", flatten=True)
    with pytest.raises(ValueError, match="no MPO layer"):
        dmrg_sweep(FC2(in_features=64, hidden=16), data, sweeps=1, progress=False)


def test_checkpoint_of_a_swept_model_loads_into_a_fresh_one(tmp_path):
    from adntn_lab.train.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    data = load_dataset("digits", flatten=True)

    def fresh():
        return compress_model(FC2(in_features=64, hidden=64), "mpo", include=["fc1"],
                              bond_dim=2, min_params=10)

    model = fresh()
    dmrg_sweep(model, data, sweeps=1, lr=1e-2, bond_dim=5, local_steps=5, progress=False)
    path = tmp_path / "swept.safetensors"
    save_checkpoint(path, model, None, config={})
    other = fresh()
    other.load_state_dict(load_checkpoint(path).model_state)
    x = data.test.tensors[0][:16]
    model.eval(), other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x))
