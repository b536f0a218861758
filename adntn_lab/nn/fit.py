"""Fitting generator cores to a given dense weight."""

from __future__ import annotations

import numpy as np
import torch

from ..numerics import frobenius_norm

__all__ = ["fit_to_weight", "relative_error", "warn_if_poor"]


def relative_error(w_gen: torch.Tensor, target: torch.Tensor) -> float:
    """``||w_gen - target||_F / ||target||_F``."""
    return frobenius_norm(w_gen - target) / max(frobenius_norm(target), 1e-30)


def _lowrank_svd(generated, target) -> bool:
    """Exact best rank-r fit for the low-rank family (truncated SVD)."""
    gen = generated.generator
    if gen.family != "lowrank":
        return False
    r = gen.cores["U"].shape[1]
    u, s, vh = np.linalg.svd(target.detach().cpu().double().numpy(), full_matrices=False)
    r_eff = min(r, s.size)
    root = np.sqrt(s[:r_eff])
    U = np.zeros(gen.cores["U"].shape)
    V = np.zeros(gen.cores["V"].shape)
    U[:, :r_eff] = u[:, :r_eff] * root
    V[:r_eff] = root[:, None] * vh[:r_eff]
    with torch.no_grad():
        generated.cores["U"].copy_(torch.as_tensor(U))
        generated.cores["V"].copy_(torch.as_tensor(V))
    return True


def warn_if_poor(error: float, what: str) -> None:
    """Say so when a fit keeps little of the target: its weight is then mostly shrunk towards
    zero, and the trained bias of the layer no longer matches it."""
    if error > 0.9:
        import warnings

        warnings.warn(
            f"{what}: the generator reaches a relative error of {error:.2f}, so the fitted "
            "weight keeps little of the trained one; fine-tuning from here can start with dead "
            "units. A larger bond dimension fits better, and training from the fresh init "
            "(fit_steps=0) is usually the better start at this size.",
            stacklevel=4,  # past from_* and its inference-mode wrapper
        )


def fit_to_weight(generated, target: torch.Tensor, *, steps: int = 500, lr: float = 0.02,
                  verbose: bool = False) -> float:
    """Fit the cores of ``generated`` (a :class:`GeneratedWeight`) so that it produces
    ``target``.

    Parameters
    ----------
    generated : GeneratedWeight
    target : tensor, shape (out_features, in_features)
    steps : int
        Adam steps (the low-rank family is solved exactly by SVD instead).
    lr : float
    verbose : bool
        Show a progress bar.

    Returns
    -------
    float
        Relative Frobenius error reached.
    """
    bad = int((~torch.isfinite(target)).sum())
    if bad:
        raise ValueError(f"the weight to fit has {bad} non-finite entries (NaN or inf) of "
                         f"{target.numel()}; repair or re-initialise that layer before "
                         "compressing it")
    dtype = next(generated.parameters()).dtype
    with torch.inference_mode(False), torch.enable_grad():
        target = target.detach().clone()  # an ordinary tensor even if made in inference mode
        if dtype in (torch.float16, torch.bfloat16):
            return _fit_in_float32(generated, target, steps=steps, lr=lr, verbose=verbose)
        return _fit(generated, target.to(dtype), steps=steps, lr=lr, verbose=verbose)


def _fit_in_float32(generated, target, **kwargs) -> float:
    """Fit a float32 copy of half-precision cores (half-precision Adam steps and squared
    norms lose most of their digits), then cast the result back."""
    from .linear import GeneratedWeight

    ref = next(generated.parameters())
    work = GeneratedWeight(generated.generator, device=ref.device, dtype=torch.float32)
    work.load_state_dict({k: v.float() for k, v in generated.state_dict().items()})
    _fit(work, target.float(), **kwargs)
    generated.load_state_dict(work.state_dict())  # copies, casting to the layer's dtype
    with torch.no_grad():
        return relative_error(generated().float(), target.float())


def _fit(generated, target, *, steps, lr, verbose) -> float:
    if _lowrank_svd(generated, target) or steps <= 0:
        with torch.no_grad():
            return relative_error(generated(), target)
    from tqdm.auto import trange

    norm2 = torch.sum(target * target).clamp_min(1e-30)
    opt = torch.optim.Adam(generated.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    best = None
    bar = trange(steps, desc="fit", disable=not verbose, leave=False)
    for _ in bar:
        opt.zero_grad(set_to_none=True)
        diff = generated() - target
        loss = torch.sum(diff * diff) / norm2
        value = float(loss.detach())
        if best is None or value < best[0]:
            # the loss belongs to the cores as they are now, before this step moves them
            best = (value, {k: v.detach().clone() for k, v in generated.state_dict().items()})
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(rel_err=f"{value ** 0.5:.4f}")
    with torch.no_grad():
        diff = generated() - target
        if float(torch.sum(diff * diff) / norm2) < best[0]:
            return relative_error(generated(), target)
    generated.load_state_dict(best[1])
    with torch.no_grad():
        return relative_error(generated(), target)
