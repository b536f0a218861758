"""DMRG-like local sweeps for MPO layers (Jahromi & Orús).

A sweep visits the bonds of every MPO layer left to right and back. At bond ``k`` the two
cores ``A_k`` and ``A_{k+1}`` are merged into one block ``B`` (chi_{k-1}, d_k, d_{k+1},
chi_{k+1}); a few optimiser steps on the task loss update ``B`` alone (with the dense layers of
the model); a truncated SVD then splits ``B`` back into two cores, choosing the new bond
dimension from the singular values (at most ``bond_dim``, dropping values below
``cutoff * s_max``). The layer's generator is rebuilt with the new bond dimensions.
"""

from __future__ import annotations

import fnmatch
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..generator import Generator
from ..nn.linear import ADNTNLinear, GeneratedWeight
from ..topologies import build_mpo
from .loop import epoch_order, evaluate
from .records import History

__all__ = ["dmrg_sweep", "mpo_layers", "split_block"]


def mpo_layers(model: nn.Module, patterns=None) -> dict[str, ADNTNLinear]:
    """MPO-generated Linear layers of ``model`` whose names match ``patterns``."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, ADNTNLinear) and mod.generator.family == "mpo":
            if not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns):
                out[name] = mod
    return out


def _bond_dims(gen: Generator) -> list[int]:
    return [gen.cores[f"A{k}"].shape[-1] for k in range(gen.tensorization.n_sites - 1)]


class _MergedMPO(nn.Module):
    """W of an MPO whose cores k and k+1 are replaced by one trainable block."""

    def __init__(self, cores: list[torch.Tensor], k: int, tz):
        super().__init__()
        self.k, self.tz = k, tz
        left, right = cores[k], cores[k + 1]
        block = torch.tensordot(left, right, dims=([left.dim() - 1], [0]))
        self.block = nn.Parameter(block.detach().clone())
        self.fixed = [c.detach() for c in cores]

    def forward(self) -> torch.Tensor:
        parts = self.fixed[: self.k] + [self.block] + self.fixed[self.k + 2:]
        out = parts[0]
        for part in parts[1:]:
            out = torch.tensordot(out, part, dims=([out.dim() - 1], [0]))
        return self.tz.to_matrix(out)


def split_block(block: np.ndarray, n_left: int, max_bond: int, cutoff: float,
                sweep_right: bool):
    """Split a two-site block by truncated SVD.

    Parameters
    ----------
    block : array
        Merged cores, e.g. shape (chi_l, d_k, d_k1, chi_r); the first ``n_left`` axes go to
        the left core.
    n_left : int
    max_bond : int
        Largest bond dimension kept.
    cutoff : float
        Singular values below ``cutoff * s_max`` are dropped.
    sweep_right : bool
        Put the singular values on the right core (moving right) or on the left one.

    Returns
    -------
    left : array, shape ``block.shape[:n_left] + (chi,)``
    right : array, shape ``(chi,) + block.shape[n_left:]``
    """
    lshape, rshape = block.shape[:n_left], block.shape[n_left:]
    mat = block.reshape(int(np.prod(lshape)), int(np.prod(rshape)))
    u, s, vh = np.linalg.svd(mat, full_matrices=False)
    keep = int(np.sum(s > cutoff * s[0])) if s.size and s[0] > 0 else 1
    keep = max(1, min(keep, max_bond))
    u, s, vh = u[:, :keep], s[:keep], vh[:keep]
    if sweep_right:
        left, right = u, s[:, None] * vh
    else:
        left, right = u * s[None, :], vh
    return left.reshape(*lshape, keep), right.reshape(keep, *rshape)


def _rebuild(layer: ADNTNLinear, cores: list[np.ndarray]) -> None:
    """Give ``layer`` a new MPO generator whose bonds match ``cores``."""
    old = layer.generator
    dims = [c.shape[-1] for c in cores[:-1]]
    bp = build_mpo(old.tensorization, bond_dim=dims)
    gen = Generator(bp, None, calibrate=False, optimize=old.program.optimize)
    for k, c in enumerate(cores):
        gen.params[f"A{k}"] = np.asarray(c, dtype=np.float64)
    p = next(layer.generated.parameters())
    layer.generated = GeneratedWeight(gen, device=p.device, dtype=p.dtype)
    layer._choice.clear()  # the cheaper schedule may differ at the new ranks


def dmrg_sweep(model: nn.Module, data, *, layers=None, sweeps: int = 2, lr: float = 1e-2,
               batch_size: int = 64, seed: int = 0, device="cpu", bond_dim: int = 8,
               local_steps: int = 20, cutoff: float = 1e-3, two_site: bool = True,
               progress: bool = True, **_ignored) -> History:
    """Train the MPO layers of ``model`` by local sweeps; other parameters train alongside.

    Parameters
    ----------
    model : nn.Module
        A classifier holding at least one ``ADNTNLinear`` with ``topology="mpo"``.
    data : Dataset or (train, test)
        As for :func:`adntn_lab.train.fit`.
    layers : list of str, optional
        Layer-name patterns; every MPO layer by default.
    sweeps : int
        Full left-right-left sweeps (each recorded as one epoch in the history).
    lr : float
        Adam learning rate of each local problem.
    batch_size, seed, device
        Mini-batches are drawn in a seeded order.
    bond_dim : int
        Largest bond dimension after a split (two-site only).
    local_steps : int
        Optimiser steps per local problem.
    cutoff : float
        Relative singular-value cutoff of the split.
    two_site : bool
        Merge pairs and adapt ranks (default), or update one core at a time at fixed ranks.

    Returns
    -------
    History
    """
    from tqdm.auto import tqdm

    found = mpo_layers(model, layers)
    if not found:
        raise ValueError("dmrg_sweep found no MPO layer; compress the model with "
                         "topology='mpo' (and check the layer patterns)")
    train = data.train if hasattr(data, "train") else data[0]
    test = data.test if hasattr(data, "test") else (data[1] if isinstance(data, tuple) else None)
    x_all, y_all = train.tensors
    device = torch.device(device)
    model.to(device)
    for layer in found.values():
        layer.schedule = "materialize"
    mpo_params = {id(p) for layer in found.values() for p in layer.generated.parameters()}
    dense_params = [p for p in model.parameters() if id(p) not in mpo_params]
    history = History()
    rng_step = 0
    n_bonds = {name: layer.generator.tensorization.n_sites - 1 for name, layer in found.items()}
    total = sweeps * sum(2 * n for n in n_bonds.values()) * local_steps
    bar = tqdm(total=total, desc="dmrg", disable=not progress, leave=False)

    def batches():
        nonlocal rng_step
        while True:
            order = epoch_order(len(x_all), seed, rng_step)
            rng_step += 1
            for i in range(0, len(order) - batch_size + 1, batch_size):
                idx = order[i:i + batch_size]
                yield x_all[idx].to(device), y_all[idx].to(device)

    stream = batches()
    for sweep in range(sweeps):
        t0 = time.perf_counter()
        model.train()
        losses, correct, seen = [], 0, 0
        for name, layer in found.items():
            n = n_bonds[name]
            order = list(range(n)) + list(range(n - 1, -1, -1))
            for pos, k in enumerate(order):
                moving_right = pos < n
                cores = [layer.generated.cores[f"A{j}"] for j in range(n + 1)]
                merged = _MergedMPO(cores, k, layer.generator.tensorization).to(device)
                original = layer.generated
                layer.generated = merged  # the layer's weight now comes from the block
                opt = torch.optim.Adam([merged.block, *dense_params], lr=lr)
                for _ in range(local_steps):
                    xb, yb = next(stream)
                    opt.zero_grad(set_to_none=True)
                    logits = model(xb)  # the layer draws its weight from the block
                    loss = F.cross_entropy(logits, yb)
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                    history.step_loss.append(losses[-1])
                    correct += int((logits.argmax(1) == yb).sum())
                    seen += len(yb)
                    bar.update(1)
                layer.generated = original
                block = merged.block.detach().cpu().double().numpy()
                n_left = 2 if k > 0 else 1
                if not two_site:
                    max_bond = cores[k].shape[-1]
                else:
                    max_bond = bond_dim
                left, right = split_block(block, n_left, max_bond, cutoff, moving_right)
                new = [c.detach().cpu().double().numpy() for c in cores]
                new[k], new[k + 1] = left, right
                _rebuild(layer, new)
        train_loss = float(np.mean(losses)) if losses else float("nan")
        history.epoch.append(sweep + 1)
        history.train_loss.append(train_loss)
        history.train_acc.append(correct / max(seen, 1))
        if test is not None:
            ev = evaluate(model, test, device=device)
            history.test_loss.append(ev.loss)
            history.test_acc.append(ev.accuracy)
        else:
            history.test_loss.append(float("nan"))
            history.test_acc.append(float("nan"))
        history.epoch_time.append(time.perf_counter() - t0)
    bar.close()
    for layer in found.values():
        layer.schedule = "auto"
    return history
