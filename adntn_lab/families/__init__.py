"""The generator families, each declared once (see :class:`Family`).

Every module of this package that defines ``FAMILY`` is a family; :func:`get_family` and
:data:`FAMILIES` list them in their declared order. Adding a family means adding one module
here (its blueprint builder may live beside it or in :mod:`adntn_lab.topologies`).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from ._spec import Family, Option, strict_int

__all__ = ["FAMILIES", "Family", "Option", "all_families", "get_family", "strict_int"]


def _discover() -> dict[str, Family]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if isinstance(family, Family):
            found.append(family)
    found.sort(key=lambda f: (f.order, f.name))
    return {f.name: f for f in found}


_REGISTRY = _discover()

#: names of the built-in families, in their declared order
FAMILIES: tuple[str, ...] = tuple(_REGISTRY)


def all_families() -> list[Family]:
    """Every family, in declared order."""
    return list(_REGISTRY.values())


def get_family(name) -> Family:
    """The family called ``name`` (case-insensitive).

    Raises
    ------
    ValueError
        For an unknown name, listing the families (and the closest match).
    """
    key = name.lower() if isinstance(name, str) else None
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(str(name).lower(), FAMILIES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown family {name!r}{hint}; use one of {', '.join(FAMILIES)}, or "
                     "al.from_graph(...) for a custom network")
