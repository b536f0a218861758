"""The offline demo, in its quick mode: the cost table, both accuracies and the PNG."""

from __future__ import annotations

import re

import matplotlib.image
import pytest
import torch

import adntn_lab as al
from adntn_lab import cli


def test_quick_demo(tmp_path, capsys):
    threads = torch.get_num_threads()
    png = tmp_path / "out" / "demo.png"
    assert cli.main(["demo", "--quick", "--out", str(png), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert torch.get_num_threads() == threads  # restored

    # one row per family with its parameter count and compression ratio
    for fam in al.FAMILIES:
        row = next(line for line in text.splitlines() if line.startswith(fam + " "))
        gen = al.build(fam, 784, 256, **({"rank": 4} if fam == "lowrank" else {"bond_dim": 4}))
        cells = row.split()
        assert int(cells[1].replace(",", "")) == gen.num_params
        assert float(cells[2].rstrip("x").replace(",", "")) == pytest.approx(
            784 * 256 / gen.num_params, abs=0.05
        )
    # low-rank with rank 4: 4 * (784 + 256) parameters, by definition
    assert re.search(r"^lowrank\s+4,160\s", text, re.M)

    # both models trained, accuracies side by side
    accs = dict(re.findall(r"^(FC-2 \+ ttn|FC-2 dense)\s+[\d,]+\s+[\d,]+\s+([\d.]+)%", text, re.M))
    assert set(accs) == {"FC-2 + ttn", "FC-2 dense"}
    assert all(10.0 < float(a) <= 100.0 for a in accs.values())  # learned beyond chance

    img = matplotlib.image.imread(png)
    assert img.ndim == 3 and img.shape[1] > img.shape[0] > 200
    assert f"figure written to {png}" in text


def test_demo_options_reach_run_demo(monkeypatch, tmp_path):
    import adntn_lab.demo as demo_mod

    seen = {}
    monkeypatch.setattr(demo_mod, "run_demo", lambda **kw: seen.update(kw))
    monkeypatch.setenv("ADNTN_LAB_QUICK", "1")
    assert cli.main(["demo", "--family", "mpo", "--bond-dim", "3", "--out", str(tmp_path)]) == 0
    assert seen["quick"] is True and seen["family"] == "mpo" and seen["bond_dim"] == 3
    assert seen["threads"] == 1
    monkeypatch.setenv("ADNTN_LAB_QUICK", "0")
    cli.main(["demo"])
    assert seen["quick"] is False and seen["out"] is None


def test_demo_rejects_unknown_family(tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--family", "nope"])  # argparse lists the choices
    from adntn_lab.demo import run_demo

    with pytest.raises(ValueError, match="ttn"):
        run_demo(tmp_path / "x.png", family="nope")
