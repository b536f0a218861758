"""The engine's seams: one stage walk, one step record, costs from the Program alone, a
stateless shared Program, the layer's own schedule choice, and the import layering."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import adntn_lab as al
from adntn_lab.engine import Front, Program, cost_report, walk
from adntn_lab.nn import ADNTNLinear

PACKAGE = Path(al.__file__).parent


def test_walk_runs_groups_in_order_and_carries_each_result_once():
    gen = al.build("mera", 64, 64, bond_dim=2)
    groups = gen.program.groups
    seen, produced = [], set()

    def visit(index, group, operands):
        seen.append(index)
        for name, value in zip(group.operands, operands):
            if name in gen.cores:
                assert value == ("core", name)
            else:  # a result of an earlier group, taken off the front exactly once
                assert value == ("result", name) and name in produced
                produced.remove(name)
        produced.add(group.key)
        return ("result", group.key)

    front = walk(groups, Front({n: ("core", n) for n in gen.cores}), visit)
    assert seen == list(range(len(groups)))
    assert front.carried == {gen.program.final_key: ("result", gen.program.final_key)}


def test_cost_report_needs_only_the_program():
    """No core values: a Program made from the plan alone gives the generator's report."""
    gen = al.build("ttn", 256, 128, bond_dim=3)
    program = Program(gen.program.plan, gen.tensorization, gen.activations)
    for batch, schedule in [(None, "auto"), (64, "auto"), (64, "fused"), (8, "materialize")]:
        ours = cost_report(program, batch_size=batch, schedule=schedule, family="ttn")
        assert ours.to_dict() == gen.cost(batch, schedule).to_dict()
    del gen.params  # Generator.cost reads shapes only
    assert gen.cost(32).num_params == gen.num_params


def test_captured_steps_are_the_report_steps():
    gen = al.build("attn", 64, 48, bond_dim=2)
    _, captures = gen.program.run(gen.params, capture=True)
    report = gen.cost()
    assert len(captures) == len(report.steps) > 0
    for cap, step in zip(captures, report.steps):
        assert type(cap) is type(step)
        assert (cap.stage, cap.group, cap.step, cap.left, cap.right, cap.output_shape,
                cap.flops) == (step.stage, step.group, step.step, step.left, step.right,
                               step.output_shape, step.flops)
        assert np.shape(cap.array) == step.output_shape and step.array is None


def test_a_shared_program_keeps_no_per_call_state():
    gen = al.build("brickwall", 256, 64, depth=2)
    copy = al.Generator.__new__(al.Generator)
    copy.__dict__.update(gen.__dict__)  # shares gen.program, as exported copies do
    assert copy.program is gen.program
    arrays = {k: torch.tensor(v, requires_grad=not gen.cores[k].constant)
              for k, v in gen.params.items()}
    before = set(vars(gen.program))
    lean = copy.program.run(arrays, recompute="lean")
    ordinary = gen.program.run(arrays)
    assert "Lean" in type(lean.grad_fn).__name__
    assert "Lean" not in type(ordinary.grad_fn).__name__
    assert set(vars(gen.program)) == before
    torch.testing.assert_close(lean, ordinary, rtol=1e-6, atol=1e-7)


def test_layer_chooses_its_schedule_once_per_batch_and_forgets_on_change(monkeypatch):
    import adntn_lab.nn.linear as linear_module

    calls = []
    original = linear_module.estimate_schedules

    def counting(program, batch, **kw):
        calls.append(batch)
        return original(program, batch, **kw)

    def refuse(*args, **kwargs):
        raise AssertionError("the schedule choice must not build a CostReport")

    monkeypatch.setattr(linear_module, "estimate_schedules", counting)
    monkeypatch.setattr(al.Generator, "cost", refuse)
    layer = ADNTNLinear(64, 32, topology="ttn", bond_dim=2)
    x = torch.randn(16, 64)
    layer(x)
    layer(x)
    layer(torch.randn(4, 64))
    assert calls == [16, 4]
    layer.schedule = "fused"
    y_fused = layer(x)
    layer.schedule = "auto"
    y_auto = layer(x)
    assert calls == [16, 4, 16]
    torch.testing.assert_close(y_fused, y_auto, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown schedule"):
        layer.schedule = "sometimes"


def _imports(path: Path) -> set[str]:
    """Absolute names of the adntn_lab modules a file imports (relative ones resolved)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = parts[: len(parts) - node.level]
            out.add(".".join([*base, node.module] if node.module else base))
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return {m for m in out if m.startswith("adntn_lab")}


@pytest.mark.parametrize("layer", ["engine", "topologies"])
def test_engine_and_topologies_never_import_the_layers_above(layer):
    above = ("adntn_lab.generator", "adntn_lab.nn", "adntn_lab.widgets", "adntn_lab.train")
    for path in (PACKAGE / layer).glob("*.py"):
        bad = {m for m in _imports(path) if m.startswith(above)}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_layers_pickled_before_the_schedule_property_still_load():
    layer = ADNTNLinear(32, 16, topology="ttn", bond_dim=2, schedule="fused")
    state = dict(layer.__getstate__())
    state["schedule"] = state.pop("_schedule")  # the attribute as older layers stored it
    weight_state = dict(layer.generated.__getstate__())
    del weight_state["recompute"]
    old = ADNTNLinear.__new__(ADNTNLinear)
    old.__setstate__(state)
    old.generated.__setstate__(weight_state)
    assert old.schedule == "fused" and old.generated.recompute == "auto"
    x = torch.randn(4, 32)
    torch.testing.assert_close(old(x), layer(x))
