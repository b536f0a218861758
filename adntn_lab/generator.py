"""The :class:`Generator`: a staged tensor network that produces a weight matrix."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .activations import Activation, resolve_stage_activations
from .engine import weight_moments
from .engine.planning import plan_structure
from .engine.program import Program
from .numerics import (
    MAX_CENTERING_GAIN,
    MAX_ROW_MEAN_RATIO,
    ROW_CENTERING_STEPS,
    ROW_CENTERING_TRIGGER,
    ConditioningWarning,
    check_depth,
    check_precision,
    frobenius_norm,
)
from .tensorize import Tensorization, check_features
from .topologies import Blueprint, CoreSpec
from .topologies.custom import generator_to_dict, graph_to_blueprint

__all__ = ["Generator", "Stage", "build", "default_init_std", "from_graph"]

BACKENDS = ("numpy", "torch", "cupy")


def default_init_std(in_features: int) -> float:
    """Standard deviation of PyTorch's default init for a layer with ``in_features`` inputs.

    ``kaiming_uniform_(a=sqrt(5))`` draws from U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    return 1.0 / math.sqrt(3.0 * in_features)


@dataclass(frozen=True)
class Stage:
    """One stage: its cores and the activation applied to each of its groups."""

    index: int
    cores: tuple[str, ...]
    activation: Activation

    @property
    def tag(self) -> str:
        return f"STAGE{self.index}"


class Generator:
    """A differentiable tensor-network generator of a weight matrix ``W`` (out, in).

    Build one with :func:`build` or :func:`adntn_lab.from_graph`.

    Parameters
    ----------
    blueprint : Blueprint
        Cores, bonds, stages and constants of the network.
    activation : str, callable, None or sequence
        One activation for the family's nonlinear stages, or one per stage.
    seed : int
        Seed of the random initial cores.
    optimize : str or cotengra optimizer
        Contraction-path optimiser for the stage groups.
    calibrate : bool
        Rescale the initial cores so that each group's pre-activation has unit RMS and ``W``
        has the standard deviation of PyTorch's default init for the dense layer (and zero
        mean when the last stage is linear); see :meth:`calibrate`.
    memory_budget : int or str, optional
        Bytes this generator may take to build (see :mod:`adntn_lab.resources`); checked from
        the structure before any core is allocated.
    """

    def __init__(self, blueprint: Blueprint, activation=None, *, seed: int = 0,
                 optimize="auto", calibrate: bool = True, memory_budget=None):
        self.blueprint = blueprint
        self.family = blueprint.family
        self.tensorization: Tensorization = blueprint.tensorization
        self.options = dict(blueprint.options)
        self.cores: dict[str, CoreSpec] = {c.name: c for c in blueprint.cores}
        self.num_stages = blueprint.num_stages
        self.seed = seed
        size_dict = {ix: d for c in blueprint.cores for ix, d in zip(c.inds, c.shape)}
        plan = plan_structure(blueprint.cores, size_dict, self.num_stages,
                              self.tensorization.physical_inds)
        # structure first: a structural mistake is reported before any activation mismatch
        self.activations = resolve_stage_activations(
            activation, self.num_stages, blueprint.activated, self.family
        )
        check_depth(self, stacklevel=3)
        self.program = Program(plan, self.tensorization, self.activations, optimize)
        self._check_resources(memory_budget)
        self.params: dict[str, np.ndarray] = self._initial_params(seed)
        if calibrate:
            self.calibrate()

    # ------------------------------------------------------------------ description
    @property
    def in_features(self) -> int:
        return self.tensorization.in_features

    @property
    def out_features(self) -> int:
        return self.tensorization.out_features

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def trainable_names(self) -> list[str]:
        return [n for n, c in self.cores.items() if not c.constant]

    @property
    def constant_names(self) -> list[str]:
        return [n for n, c in self.cores.items() if c.constant]

    @property
    def num_params(self) -> int:
        """Number of trainable scalars."""
        return sum(self.cores[n].size for n in self.trainable_names)

    @property
    def compression_ratio(self) -> float:
        """Dense parameters ``O * I`` over the generator's parameters."""
        return self.out_features * self.in_features / self.num_params

    @property
    def stages(self) -> list[Stage]:
        return [
            Stage(s, tuple(n for n, c in self.cores.items() if c.stage == s), self.activations[s])
            for s in range(self.num_stages)
        ]

    @property
    def size_dict(self) -> dict[str, int]:
        return self.program.size_dict

    @property
    def tn(self):
        """The cores as a ``quimb.tensor.TensorNetwork`` (tags: name, ``STAGE{s}``, kind,
        ``CONST`` on constants)."""
        import quimb.tensor as qtn

        tensors = []
        for name, c in self.cores.items():
            tags = {name, f"STAGE{c.stage}", c.kind.upper()}
            if c.constant:
                tags.add("CONST")
            tensors.append(qtn.Tensor(np.array(self.params[name]), inds=c.inds, tags=tags))
        return qtn.TensorNetwork(tensors)

    def __repr__(self) -> str:
        o, i = self.shape
        acts = ",".join(a.name for a in self.activations)
        return (f"Generator({self.family}, {o}x{i}, sites={self.tensorization.site_dims}, "
                f"stages={self.num_stages} [{acts}], params={self.num_params:,}, "
                f"compression={self.compression_ratio:,.1f}x)")

    def resource_estimate(self):
        """:class:`~adntn_lab.resources.ResourceEstimate` of this structure (shapes only)."""
        from .resources import estimate_from

        size = self.program.size_dict
        largest = max((math.prod(size[i] for i in g.output) for g in self.program.plan.groups),
                      default=0)
        return estimate_from(self.num_params, self.tensorization, largest)

    def _check_resources(self, budget) -> None:
        from .resources import check

        check(self.resource_estimate(), budget=budget,
              what=f"this {self.family} generator ({self.out_features}x{self.in_features})")

    # ------------------------------------------------------------------ values
    def _initial_params(self, seed) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        params = {}
        orthogonal_gates = self.family == "brickwall"
        for name, c in self.cores.items():
            if c.constant:
                params[name] = np.array(self.blueprint.constants[name], dtype=np.float64)
            elif orthogonal_gates and c.kind == "gate":
                params[name] = _orthogonal_gate(rng, c.shape)
            else:
                params[name] = rng.standard_normal(c.shape) / math.sqrt(c.fan_in)
        return params

    def calibrate(self, target_std: float | None = None) -> None:
        """Rescale the cores in place: unit RMS before every activation, ``W.std()`` equal to
        ``target_std`` (PyTorch's default-init std for the dense layer by default), zero-mean
        ``W`` when the last activation is the identity, and balanced core scales.

        With a linear last stage, the spread of ``W``'s row means is also brought down to what
        i.i.d. entries give (``MAX_ROW_MEAN_RATIO``): behind a ReLU every intermediate tensor
        is non-negative, so a tree's rows do not average out and their means reach 5-13 times
        the i.i.d. level on a 4096-wide layer. A unit ``z_i = W_i . h`` fed by non-negative
        inputs ``h`` (the output of a ReLU layer) then has the sign of its row mean for every
        input: a third of them start dead, and the first Adam steps kill the rest. A few
        conjugate-gradient steps on one last-stage core (W is linear in it) remove that
        component; they run only when the spread is above ``ROW_CENTERING_TRIGGER`` (never, in
        practice, for MPO, low-rank or identity trees) and cost two passes and one backward
        pass each, at most ``ROW_CENTERING_STEPS`` of them.

        Costs about two forward passes and one partial backward pass of the generator: one
        pass rescales every group as it runs and, when the last stage is linear, takes the
        gradient of ``W.mean()`` with respect to one last-stage core (to centre ``W``); one
        more pass measures ``W.std()``, which a rescaling of the last stage then sets exactly.
        Runs in torch (float32 for large networks, float64 for small ones), also inside
        ``torch.no_grad()`` or ``torch.inference_mode()``.

        Centring cannot make ``W`` ill-conditioned: when the mean can only be removed by a
        cancellation that would magnify rounding errors more than ``MAX_CENTERING_GAIN``
        (:mod:`adntn_lab.numerics`) times (e.g. a last stage of two numbers behind a ReLU),
        ``W`` keeps its mean and a :class:`~adntn_lab.ConditioningWarning` says so. A group
        whose output is zero or not finite is left unscaled.
        """
        import torch

        target = default_init_std(self.in_features) if target_std is None else target_std
        # the calibration differentiates W.mean(): keep autograd on whatever the caller set
        with torch.inference_mode(False), torch.enable_grad():
            self._calibrate(float(target))
        self._balance()

    def _calibrate(self, target: float) -> None:
        import torch

        params = self.params
        final_key = self.program.plan.final_key
        # float32 is plenty for choosing the scales of a large network and halves its memory
        # traffic; small networks use float64 so that W.std() hits the target to ~1e-12
        padded = self.tensorization.padded_out * self.tensorization.padded_in
        dtype = torch.float64 if padded <= _CALIBRATE_FLOAT64_MAX else torch.float32

        def trainable(group):
            return [n for n in group.stage_cores if not self.cores[n].constant]

        def arrays(values):
            return {k: torch.as_tensor(np.asarray(v), dtype=dtype) for k, v in values.items()}

        def hook(group, out):
            names = trainable(group)
            if not names or group.key == final_key:
                return out
            act = self.activations[group.stage]
            if _is_dead(out, act):
                # e.g. ReLU of an all-negative group: flip one core so the subtree is alive
                params[names[0]] = -params[names[0]]
                out = -out
            rms = _rms(out)
            if not math.isfinite(rms) or rms == 0.0:
                return out
            # each core belongs to one group, so rescaling the float64 masters after their
            # group has run leaves the rest of this pass unaffected
            factor = rms ** (-1.0 / len(names))
            for n in names:
                params[n] = params[n] * factor
            return out / rms

        names = trainable(self.program.groups[-1])
        center = bool(names) and self.activations[-1].is_identity
        # with a fused last stage, mean(W) and its gradient come from the row means (one
        # input row through the fused schedule), so the passes over W need no autograd
        fused = self.program.chains[-1] is None
        track = center and not fused
        values = arrays(params)
        if center:
            # W is linear in each last-stage core; the last of the largest ones is the cheapest
            # to differentiate (a gate chain's last block)
            core = max(reversed(names), key=lambda n: self.cores[n].size)
            values[core].requires_grad_(track)
            if weight_moments.moments_are_cheap(self.program):
                self._calibrate_by_moments(values, arrays, hook, names, core, target)
                return
        # mean and std do not depend on the order of W's entries: without padding to crop,
        # take the physical tensor and skip reordering it into a matrix
        tz = self.tensorization
        physical = (tz.padded_out, tz.padded_in) == (tz.out_features, tz.in_features)
        w = self.program.run(values, hook=hook, physical=physical)
        if not names:
            return
        if center:
            # row centring removes part of W's variance, so its target (a multiple of
            # std(W) / sqrt(in)) is checked again against the std of the new W; the first
            # round starts only above ROW_CENTERING_TRIGGER
            before, rms_before, std = params[core], _rms(w), _std(w)
            changed = False
            for first in (True, False, False):
                moved, m_rms = self._center_rows(params, core, arrays, std, first)
                if not moved:
                    break
                changed = True
                del w
                values = arrays(params)
                values[core].requires_grad_(track)
                w = self.program.run(values, physical=physical)
                std = _std(w)
                if m_rms * math.sqrt(self.in_features) <= MAX_ROW_MEAN_RATIO * std:
                    break
            if changed and not _rms(w) * MAX_CENTERING_GAIN >= rms_before:
                params[core] = before  # the centring cancelled W: keep the calibrated core
                values = arrays(params)
                values[core].requires_grad_(track)
                w = self.program.run(values, physical=physical)
        if center:
            rms = _rms(w)
            if fused:
                del w
                values = arrays(params)
                values[core].requires_grad_(True)
                mean_t = self._row_means(values).sum() / self.out_features
            else:
                mean_t = w.sum(dtype=torch.float64) / w.numel()
                del w
            mean_t.backward()
            g = values.pop(core).grad.double().numpy()
            norm2 = float(np.sum(g * g))
            mean = float(mean_t.detach())
            before = params[core]
            if norm2 > 0.0 and math.isfinite(norm2) and math.isfinite(mean):
                params[core] = before - (mean / norm2) * g
            with torch.no_grad():
                w = self.program.run(arrays(params), physical=physical)
            # W = W_0 - a W_g: when the two nearly cancel, the centred W is their small
            # difference and every rounding error of either grows by rms(W_0) / rms(W)
            gain = rms / max(_rms(w), 1e-300)
            if not gain <= MAX_CENTERING_GAIN:
                params[core] = before
                with torch.no_grad():
                    w = self.program.run(arrays(params), physical=physical)
                self._warn_uncentred(mean, core, gain, stacklevel=4)
        homogeneous = self.activations[-1].is_identity or \
            self.activations[-1].positively_homogeneous
        # one rescaling is exact when the last activation is homogeneous; others converge
        # in a few passes
        for attempt in range(1 if homogeneous else 4):
            if attempt:
                with torch.no_grad():
                    w = self.program.run(arrays(params), physical=physical)
            std = _std(w)
            del w
            if not math.isfinite(std) or std == 0.0 or abs(std / target - 1.0) < 1e-9:
                break
            factor = (target / std) ** (1.0 / len(names))
            for n in names:
                params[n] = params[n] * factor

    def _calibrate_by_moments(self, values, arrays, hook, names, core, target) -> None:
        """:meth:`_calibrate` for a linear last stage whose moments are cheap
        (:mod:`adntn_lab.engine.weight_moments`): one pass over the groups before the last
        (rescaling them through ``hook``), then every mean, RMS and std of ``W`` from the
        last group's operands, without forming ``W``."""
        import torch

        params, program = self.params, self.program
        with torch.no_grad():
            ops = weight_moments.last_operands(program, values, hook)
        # the cores of the last group were not rescaled by the hook: `ops` holds them as
        # they are in `params`, and only they change from here on

        def with_params(**override):
            current = arrays({n: params[n] for n in names})
            current.update(override)
            return weight_moments.with_cores(program, ops, current)

        def moments():
            with torch.no_grad():
                return weight_moments.std_of(program, with_params())

        def row_means(values):
            cores = {n: values[n] for n in names}
            return weight_moments.row_means(
                program, weight_moments.with_cores(program, ops, cores)).to(torch.float64)

        before = params[core]
        _, rms_before, std = moments()
        changed = False
        for first in (True, False, False):
            moved, m_rms = self._center_rows(params, core, arrays, std, first, row_means)
            if not moved:
                break
            changed = True
            _, _, std = moments()
            if m_rms * math.sqrt(self.in_features) <= MAX_ROW_MEAN_RATIO * std:
                break
        _, rms, _ = moments()
        if changed and not rms * MAX_CENTERING_GAIN >= rms_before:
            params[core] = before  # the centring cancelled W: keep the calibrated core
            _, rms, _ = moments()
        # mean(W) and its gradient with respect to `core` (W is linear in it)
        start = params[core]
        grad_core = torch.as_tensor(np.asarray(start), dtype=ops[0].dtype).requires_grad_(True)
        mean_t = weight_moments.row_means(program, with_params(**{core: grad_core})).to(
            torch.float64).sum() / self.out_features
        mean_t.backward()
        g = grad_core.grad.double().numpy()
        norm2 = float(np.sum(g * g))
        mean = float(mean_t.detach())
        if norm2 > 0.0 and math.isfinite(norm2) and math.isfinite(mean):
            params[core] = start - (mean / norm2) * g
        _, rms_after, std = moments()
        gain = rms / max(rms_after, 1e-300)
        if not gain <= MAX_CENTERING_GAIN:
            params[core] = start
            _, _, std = moments()
            self._warn_uncentred(mean, core, gain, stacklevel=5)
        # the last stage is linear, so one rescaling sets std(W) exactly
        if math.isfinite(std) and std > 0.0:
            factor = (target / std) ** (1.0 / len(names))
            for n in names:
                params[n] = params[n] * factor

    def _warn_uncentred(self, mean: float, core: str, gain: float, stacklevel: int) -> None:
        warnings.warn(
            f"W of this {self.family} generator is not centred at initialisation: its "
            f"mean ({mean:.3g}) can only be removed through core {core!r} by a "
            f"cancellation that would magnify rounding errors {gain:.3g}-fold, so W "
            "keeps its mean; give the last stage more parameters (a larger bond) or "
            "use an activation with negative values before it (tanh, leaky_relu)",
            ConditioningWarning, stacklevel=stacklevel + 1)

    def _center_rows(self, params, core: str, arrays, std: float,
                     first: bool, row_means=None) -> tuple[bool, float]:
        """Shrink ``rms(row means of W)`` to at most ``MAX_ROW_MEAN_RATIO`` times the i.i.d.
        level ``std / sqrt(in_features)`` (``std``: that of ``W``) when it is above that
        (``first``: above ``ROW_CENTERING_TRIGGER`` times the level): conjugate-gradient
        least squares (CGLS)
        on ``|row means|^2`` over ``core``, a last-stage core in which ``W`` is linear, from
        its current value, for at most ``ROW_CENTERING_STEPS`` steps. The row means are
        ``W @ 1 / in_features``: the fused schedule applied to one input row, which never
        forms ``W`` (except behind a gate chain, whose fused contraction would cost more).
        The caller checks that the result does not cancel ``W``. Returns whether ``core``
        changed and the last rms of the row means. ``row_means(values)`` computes them
        (:meth:`_row_means` by default)."""
        import torch

        if self.out_features < 2 or self.in_features < 2 or not (
                math.isfinite(std) and std > 0.0):
            return False, math.nan
        row_means = row_means or self._row_means
        level = std / math.sqrt(self.in_features)
        start = params[core]
        x, p, gamma, m_rms = start, None, None, math.nan
        for step in range(ROW_CENTERING_STEPS + 1):
            values = arrays({**params, core: x})
            values[core].requires_grad_(True)
            m = row_means(values)
            m_rms = float(torch.linalg.vector_norm(m.detach())) / math.sqrt(m.numel())
            if not math.isfinite(m_rms):
                x = start  # numerically unsafe: keep the calibrated core
                break
            limit = ROW_CENTERING_TRIGGER if first and p is None else MAX_ROW_MEAN_RATIO
            if m_rms <= limit * level or p is not None and step == ROW_CENTERING_STEPS:
                break
            (0.5 * (m * m).sum()).backward()
            g = -values[core].grad.double().numpy()  # A^T r with the residual r = -m
            del values
            gamma_new = float(np.sum(g * g))
            if not (gamma_new > 0.0 and math.isfinite(gamma_new)):
                break
            p = g if p is None else g + (gamma_new / gamma) * p
            gamma = gamma_new
            with torch.no_grad():
                # W is linear in `core`: the row means of W(core = p) are A p
                q = row_means(arrays({**params, core: p}))
            qq = float(q @ q)
            if not (qq > 0.0 and math.isfinite(qq)):
                break
            x = x + (gamma / qq) * p
        changed = x is not start
        params[core] = x
        return changed, m_rms

    def _row_means(self, values):
        """The row means of ``W`` (shape (out_features,), float64) for torch ``values``: the
        fused schedule applied to one input row, which never forms ``W`` (except behind a
        gate chain, whose fused contraction would cost more)."""
        import torch

        program = self.program
        if program.chains[-1] is not None:
            # in W's precision (torch's cascade sum; a float64 mean converts every entry and
            # is about 100x slower)
            return program.run(values).mean(dim=1).to(torch.float64)
        ops = weight_moments.last_operands(program, values)
        return weight_moments.row_means(program, ops).to(torch.float64)

    def _balance(self) -> None:
        """Give every trainable core the same RMS without changing ``W``.

        Calibration leaves the whole output scale on the last stage (a root of RMS ~0.02 beside
        leaves of RMS 1), and an optimiser such as Adam, whose steps have a fixed size per
        entry, then moves that one core by tens of percent per step. When every activation is
        positively homogeneous (``sigma(a x) = a sigma(x)`` for ``a > 0``) the scales can move
        between cores freely: ``W(f_1 c_1, ..., f_n c_n) = (prod f) W(c)``.
        """
        if not all(a.positively_homogeneous for a in self.activations):
            return
        names = self.trainable_names
        rms = {n: float(np.sqrt(np.mean(np.square(self.params[n])))) for n in names}
        if not names or any(not np.isfinite(r) or r == 0.0 for r in rms.values()):
            return
        common = float(np.exp(np.mean([np.log(r) for r in rms.values()])))
        for n in names:
            self.params[n] = self.params[n] * (common / rms[n])

    def with_optimizer(self, optimize) -> Generator:
        """The same generator (sharing its values) planned with another path optimiser:
        ``"auto"``, ``"greedy"``, ``"optimal"``, ``"hyper"`` or a cotengra optimizer."""
        import copy

        other = copy.copy(self)
        other.program = self.program.with_optimizer(optimize)
        return other

    def weight(self, backend: str = "numpy", params: dict | None = None, *, device=None,
               dtype=None, memory_limit=None):
        """Generate ``W`` of shape (out_features, in_features).

        Parameters
        ----------
        backend : {"numpy", "torch", "cupy", "auto"}
            Array library to run the contraction with; ``"auto"`` picks CuPy on a CUDA
            device, else torch on CUDA, else numpy (see
            :func:`adntn_lab.engine.backends.resolve_backend`). Ignored when ``params`` is given.
        params : dict, optional
            Arrays to use instead of the stored numpy values (e.g. torch Parameters); all
            from one backend on one device.
        device : str, int or torch.device, optional
            ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` for torch and CuPy; a device this machine
            lacks raises an error instead of running elsewhere.
        dtype : optional
            Array dtype; float64 for numpy by default, float32 for torch.
        memory_limit : int, optional
            Bytes; groups over it run sliced (see :meth:`cost`).
        """
        from .engine.backends import to_backend

        if dtype is not None and not np.issubdtype(_numpy_dtype(dtype), np.floating):
            raise TypeError(f"weight(dtype={dtype!r}): W is generated in floating point; use "
                            "a float dtype (float16, float32 or float64), not an integer one")
        if dtype is not None:
            check_precision(self, dtype)
        arrays = params if params is not None else to_backend(self.params, backend,
                                                             device=device, dtype=dtype)
        return self.program.run(arrays, memory_limit=memory_limit)

    def physical_tensor(self):
        """The generated tensor with one axis per physical leg (numpy, before cropping)."""
        return self.program.run(self.params, physical=True)

    def cost(self, batch_size: int | None = None, schedule: str = "auto", *,
             memory_limit: int | None = None, dtype: str = "float32", optimize=None):
        """Cost report of generating ``W`` (and applying it to a batch).

        Parameters
        ----------
        batch_size : int, optional
            Rows of the input batch; without it only generation is costed.
        schedule : {"auto", "materialize", "fused"}
        memory_limit : int, optional
            Bytes; groups over it are sliced (or refused with :class:`MemoryLimitError`).
        dtype : str
            Element type the bytes are counted in.
        optimize : str or cotengra optimizer, optional
            Cost the plan of another path optimiser instead of this generator's own.

        Returns
        -------
        CostReport
        """
        from .engine.cost import cost_report

        program = self.program if optimize is None else self.program.with_optimizer(optimize)
        return cost_report(program, batch_size=batch_size, schedule=schedule,
                           memory_limit=memory_limit, dtype=dtype, family=self.family)

    def draw(self, ax=None, **kwargs):
        """Matplotlib figure of the network: stages coloured, physical legs labelled."""
        from .draw import draw_generator

        return draw_generator(self, ax=ax, **kwargs)

    def to_dict(self, include_params: bool = False) -> dict:
        """JSON-able description (format ``adntn-graph/1``) that :func:`from_graph` reads."""
        return generator_to_dict(self, include_params=include_params)

    def layout(self) -> dict[str, tuple[float, float]]:
        """Drawing positions of the cores (x right, y up)."""
        from .draw import layout

        return layout(self)


def _orthogonal_gate(rng, shape) -> np.ndarray:
    """A Haar-random orthogonal gate of shape (d_a, d_b, d_a, d_b) (inputs, then outputs).

    Gaussian gates make a deep brick-wall chaotic: the products of many random matrices have
    exponentially spread singular values, so that float32 rounding or a 1e-9 change of the
    cores changes W completely by depth 50. Orthogonal gates keep every linear layer an exact
    isometry (as unitary circuits do), leaving only the activations to shape W.
    """
    n = math.prod(shape[:2])
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    q = q * np.sign(np.diag(r))  # the sign fix makes q Haar-distributed
    return q.reshape(shape)


# weights with at most this many padded entries are calibrated in float64
_CALIBRATE_FLOAT64_MAX = 1 << 20


# a group output larger than this is first checked for a dead activation on a sample
_DEAD_SAMPLE = 1 << 16


def _is_dead(out, act) -> bool:
    """Whether ``act`` zeroes a group output that is not zero (e.g. ReLU of an all-negative
    group). Large outputs are tested on an evenly strided sample first: one live entry
    settles it without a pass over the whole tensor."""
    flat = out.detach().reshape(-1)
    if flat.numel() > _DEAD_SAMPLE and bool(act(flat[:: flat.numel() // _DEAD_SAMPLE]).any()):
        return False
    return bool(flat.any()) and not bool(act(flat).any())


def _rms(x) -> float:
    """Root mean square of a torch tensor."""
    return frobenius_norm(x) / math.sqrt(x.numel())


def _std(x) -> float:
    """Standard deviation over all entries of a torch tensor."""
    import torch

    x = x.detach()
    # torch sums in a cascade, so W's own precision is accurate enough (the mean only
    # corrects the RMS) and ~16x faster than converting every entry to float64
    total = float(x.sum())
    if not math.isfinite(total):
        total = float(x.sum(dtype=torch.float64))
    mean = total / x.numel()
    return math.sqrt(max(_rms(x) ** 2 - mean * mean, 0.0))


def _numpy_dtype(dtype) -> np.dtype:
    """``dtype`` (numpy, torch or a name) as a numpy dtype, for checking its kind."""
    name = str(dtype).removeprefix("torch.")
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype("float32" if name == "bfloat16" else name)


# ---------------------------------------------------------------------- build
def build(family: str, in_features: int, out_features: int, *, bond_dim=None,
          activation=None, in_modes=None, out_modes=None, n_sites=None, seed: int = 0,
          optimize="auto", calibrate: bool = True, memory_budget=None,
          **options) -> Generator:
    """Build a generator of a weight of shape ``(out_features, in_features)``.

    Parameters
    ----------
    family : {"ttn", "attn", "mera", "brickwall", "mpo", "lowrank"}
        See :data:`adntn_lab.FAMILIES` and :mod:`adntn_lab.families`.
    in_features, out_features : int
    bond_dim : int, optional
        Bond dimension chi (4 by default; the rank for ``lowrank`` unless ``rank`` is given;
        brick-wall has none).
    activation : str, callable or sequence, optional
        ``relu`` by default for the nonlinear families; one per stage as a sequence.
    in_modes, out_modes : sequence of int, optional
        Explicit per-site factors.
    n_sites : int, optional
        Number of sites (``n_cores`` for ``mpo``).
    seed : int
    optimize : str or cotengra optimizer
    calibrate : bool
        Rescale the initial cores (see :meth:`Generator.calibrate`).
    memory_budget : int or str, optional
        Bytes (or ``"8GiB"``) this design may take; by default half the available memory
        (see :mod:`adntn_lab.resources`). A design over it raises
        :class:`~adntn_lab.resources.ResourceLimitError` before anything is allocated.
    **options
        The family's options: ``lateral`` (ttn, attn, mera), ``depth`` and ``pattern``
        (brickwall), ``n_cores`` (mpo), ``rank`` (lowrank).

    Returns
    -------
    Generator
    """
    from . import resources
    from .families import get_family

    fam = get_family(family)
    opts = fam.resolve_options({"bond_dim": bond_dim, **options})
    in_features = check_features("in_features", in_features)
    out_features = check_features("out_features", out_features)
    tz = fam.tensorize(out_features, in_features, n_sites=n_sites, out_modes=out_modes,
                       in_modes=in_modes, options=opts)
    est = resources.estimate_from(fam.num_params(tz, opts), tz)
    if resources.memory_budget(memory_budget) is not None:
        smaller = resources.largest_fitting(fam, tz, opts, memory_budget)
        hint = None if smaller is None else f"{fam.knob}={smaller}"
        resources.check(est, budget=memory_budget, what=f"{fam.name} {out_features}x"
                        f"{in_features} with {fam.knob}={opts.get(fam.knob)}", suggestion=hint)
    blueprint = fam.blueprint(tz, opts)
    if activation is None and blueprint.activated:
        activation = "relu"
    return Generator(blueprint, activation, seed=seed, optimize=optimize, calibrate=calibrate,
                     memory_budget=memory_budget)


def from_graph(graph, in_features=None, out_features=None, *, out_modes=None, in_modes=None,
               activation=None, seed: int = 0, optimize="auto", calibrate: bool = True,
               memory_budget=None):
    """Build a :class:`Generator` from a drawn or written network (format
    ``adntn-graph/1``, read by :mod:`adntn_lab.topologies.custom`).

    Parameters
    ----------
    graph : networkx.Graph, dict, str or path
        Nodes/cores with ``stage`` and ``sites``; edges/bonds with ``dim`` (see module doc).
        A string is JSON text, or the path of a JSON file.
    in_features, out_features : int, optional
        Shape of the weight; read from the graph's attributes when not given.
    out_modes, in_modes : sequence of int, optional
        Per-site factors; balanced factors of the features by default.
    activation : str, callable or sequence, optional
        One activation for every stage but the last, or one per stage. Defaults to the graph's
        ``activation`` entry, else ``relu``.
    memory_budget : int or str, optional
        Bytes the network may take to build (see :mod:`adntn_lab.resources`).

    Raises
    ------
    TypeError
        A field of the wrong type, named by its path in the description.
    ValueError
        Dangling bond, missing or doubled physical leg, stages that leave more than one
        tensor, unknown fields and other mistakes, each named by its path.
    """
    bp = graph_to_blueprint(graph, in_features, out_features, out_modes=out_modes,
                            in_modes=in_modes)
    params = bp.options.pop("params")
    graph_act = bp.options.pop("activation")
    act = activation if activation is not None else graph_act
    if act is None and bp.num_stages > 1:
        act = "relu"
    gen = Generator(bp, act, seed=seed, optimize=optimize, calibrate=calibrate and not params,
                    memory_budget=memory_budget)
    for name, arr in params.items():
        if arr.shape != gen.cores[name].shape:  # checked above; kept as the last word
            raise ValueError(f"params of core {name!r} have shape {arr.shape}, expected "
                             f"{gen.cores[name].shape}")
        gen.params[name] = arr
    return gen
