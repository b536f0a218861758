"""Large-layer support: calibration cost and its guarantees in any autograd mode, and the
numerical conditioning of deep or small generators at initialisation."""

from __future__ import annotations

import numpy as np
import pytest

import adntn_lab as al

torch = pytest.importorskip("torch")

FAMILIES = [
    ("ttn", {}),
    ("attn", {}),
    ("mera", {}),
    ("brickwall", {"depth": 3}),
    ("mpo", {}),
    ("lowrank", {}),
]


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("family,options", FAMILIES, ids=[f for f, _ in FAMILIES])
def test_build_inside_no_grad_and_inference_mode_calibrates_as_outside(family, options, mode):
    """Calibration differentiates W.mean(); building inside torch.no_grad() or
    torch.inference_mode() must give exactly the cores built outside them."""
    ref = al.build(family, 60, 40, seed=2, **options)
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context:
        gen = al.build(family, 60, 40, seed=2, **options)
        assert not torch.is_grad_enabled()  # the caller's mode is restored
    for name in ref.params:
        np.testing.assert_array_equal(gen.params[name], ref.params[name])
    w = gen.weight()
    np.testing.assert_allclose(w.std(), al.default_init_std(60), rtol=1e-6)


@pytest.mark.parametrize("family,options", FAMILIES, ids=[f for f, _ in FAMILIES])
def test_calibration_runs_two_forward_passes_and_one_backward(family, options, monkeypatch):
    """Calibration's cost is bounded by passes of the generator, not by a convergence loop."""
    gen = al.build(family, 300, 200, calibrate=False, **options)
    runs, backwards = [], []
    original_run = gen.program.run
    monkeypatch.setattr(gen.program, "run",
                        lambda arrays, **kw: runs.append(kw) or original_run(arrays, **kw))
    original_backward = torch.Tensor.backward
    monkeypatch.setattr(torch.Tensor, "backward",
                        lambda self, *a, **kw: backwards.append(1)
                        or original_backward(self, *a, **kw))
    gen.calibrate()
    assert len(runs) <= 2 and len(backwards) <= 1, (len(runs), len(backwards))
    w = gen.weight()
    np.testing.assert_allclose(w.std(), al.default_init_std(300), rtol=1e-6)
    assert abs(w.mean()) < 1e-6 * w.std()
