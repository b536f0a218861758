"""The shared helpers: argument checks, sizes, JSON-safe values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from adntn_lab.utils import format_bytes, format_count, json_safe, positive_int


@pytest.mark.parametrize("bad", [0, -3, 1.5, 2.0, "12", True, None, [4]])
def test_positive_int_refuses_what_it_would_have_to_guess(bad):
    with pytest.raises(ValueError, match=r"bond_dim must be a positive integer \(for example 4\)"):
        positive_int("bond_dim", bad)


def test_positive_int_accepts_integers_and_text_only_when_asked():
    assert positive_int("n", np.int64(7)) == 7 and type(positive_int("n", np.int64(7))) is int
    assert positive_int("n", "12", from_text=True) == 12
    assert positive_int("n", 3.0, from_text=True) == 3
    with pytest.raises(ValueError, match="an integer >= 2"):
        positive_int("n", 1, minimum=2)


def test_sizes_read_like_a_person_would_write_them():
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 2**40) == "3 TiB"
    assert format_bytes(7 * 2**60) == "7 EiB"
    assert format_bytes(None) == "–"
    assert format_count(1_234_567, "FLOP") == "1.23 MFLOP"
    assert format_count(float("nan")) == "–"


def test_json_safe_round_trips_through_json():
    value = {1: np.float32(0.5), "a": (np.int64(2), float("inf")), "p": Path("/x"),
             "arr": np.arange(3), "nan": math.nan}
    safe = json_safe(value)
    assert json.loads(json.dumps(safe, allow_nan=False)) == {
        "1": 0.5, "a": [2, None], "p": "/x", "arr": [0, 1, 2], "nan": None}
