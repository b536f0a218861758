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
