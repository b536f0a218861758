"""The glibc allocator tuning and the lean pass's memory-first section."""

from __future__ import annotations

import sys

import pytest

import adntn_lab as al
from adntn_lab.engine import allocator


def test_status_says_what_is_in_effect():
    status = al.allocator_status()
    assert set(status) == {"tuned", "reason"}
    if sys.platform.startswith("linux") and status["tuned"]:
        assert "threshold" in status["reason"]


@pytest.mark.parametrize("bad", [0, -5, 2**31])
def test_tune_allocator_rejects_thresholds_out_of_range(bad):
    with pytest.raises(ValueError, match="between 1 and 2\\*\\*31 - 1 bytes"):
        al.tune_allocator(bad)


def test_memory_first_nests_and_restores():
    before = allocator._memory_first_depth
    with allocator.memory_first():
        with allocator.memory_first():
            assert allocator._memory_first_depth == before + (2 if al.allocator_status()["tuned"]
                                                               else 0)
    assert allocator._memory_first_depth == before
    allocator.release_free_memory()  # harmless at any time


def test_importing_the_package_leaves_malloc_alone():
    """Tuning changes malloc for the whole process, so it happens only when asked for."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "ADNTN_LAB_ALLOCATOR"}
    code = "import adntn_lab as al; print(al.allocator_status()['tuned'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True)
    assert out.stdout.strip() == "False"
    if sys.platform.startswith("linux"):
        env["ADNTN_LAB_ALLOCATOR"] = "tuned"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True)
        assert out.stdout.strip() == "True"


def test_cli_flag_opts_in(monkeypatch):
    from adntn_lab import cli

    called = []
    monkeypatch.setattr(allocator, "tune_allocator", lambda *a: called.append(a) or True)
    monkeypatch.setitem(cli._COMMANDS, "costs", lambda args: 0)
    assert cli.main(["costs", "--family", "ttn", "--in-features", "16",
                     "--out-features", "16"]) == 0
    assert called == []
    monkeypatch.setitem(cli._COMMANDS, "train", lambda args: 0)
    assert cli.main(["train", "--tune-allocator"]) == 0
    assert called == [()]


def test_a_typo_in_the_environment_warns_instead_of_breaking_the_import(monkeypatch):
    monkeypatch.setenv("ADNTN_LAB_ALLOCATOR", "tunned")
    with pytest.warns(UserWarning, match="ignoring ADNTN_LAB_ALLOCATOR='tunned'"):
        assert allocator.tune_from_environment() is False
