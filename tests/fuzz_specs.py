"""Malformed ``adntn-graph/1`` designs that ``from_graph`` must refuse, as a table.

Each row of :data:`CASES` is ``(id, base, path, value, error, field)``: set ``path`` (e.g.
``"cores[0].sites[0]"``) of a copy of ``base`` to ``value`` (:data:`DELETE` removes it), and
``from_graph`` must raise ``error`` with a message that contains ``field`` (the path of what is
wrong, or the words that name it). Rows came from fuzzing valid designs; each was once accepted
with a guess, or refused from inside numpy/quimb/builtins with a message naming nothing.
:data:`TEXTS` are JSON texts and :data:`GRAPHS` networkx graphs, refused the same way.
"""

from __future__ import annotations

import copy
import re

from designs import CUSTOM

DELETE = object()

# CUSTOM with every core's axis order written out, as Generator.to_dict writes it
LEGGED = copy.deepcopy(CUSTOM)
for _core in LEGGED["cores"]:
    _bonds = [{"bond": j} for j, b in enumerate(LEGGED["bonds"]) if _core["name"] in (b["u"],
                                                                                       b["v"])]
    _core["legs"] = _bonds + [{"site": s} for s in _core["sites"]]

# CUSTOM plus a constant boundary vector feeding core "t"
CONST = copy.deepcopy(CUSTOM)
CONST["cores"].append({"name": "k", "stage": 0, "constant": True, "value": [1.0, 0.5]})
CONST["bonds"].append({"u": "k", "v": "t", "dim": 2})

# params of core "a" (legs: bond a-b 3, bond a-m 2, site 0 of dim 2*3=6)
PARAMS_A = [[[0.1] * 6 for _ in range(2)] for _ in range(3)]


def _ragged():
    p = copy.deepcopy(PARAMS_A)
    p[1][0] = p[1][0][:5]
    return p


def _deep(levels):
    v = 1.0
    for _ in range(levels):
        v = [v]
    return v


CASES = [
    # numbers where integers are meant
    ("sites-as-string", CUSTOM, "cores[0].sites", "12", TypeError, "cores[0].sites"),
    ("site-float", CUSTOM, "cores[0].sites[0]", 0.7, TypeError, "cores[0].sites[0]"),
    ("site-integral-float", CUSTOM, "cores[0].sites[0]", 0.0, TypeError, "cores[0].sites[0]"),
    ("site-bool", CUSTOM, "cores[0].sites[0]", True, TypeError, "cores[0].sites[0]"),
    ("site-string", CUSTOM, "cores[0].sites[0]", "0", TypeError, "cores[0].sites[0]"),
    ("site-negative", CUSTOM, "cores[0].sites[0]", -1, ValueError, "cores[0].sites[0]"),
    ("site-does-not-exist", CUSTOM, "cores[0].sites[0]", 7, ValueError,
     "cores[0].sites[0] is site 7, which does not exist"),
    ("site-twice-in-a-core", CUSTOM, "cores[0].sites", [0, 0], ValueError, "cores[0].sites"),
    ("site-in-two-cores", CUSTOM, "cores[1].sites", [0], ValueError, "site 0 is doubled"),
    ("site-missing", CUSTOM, "cores[3].sites", [], ValueError, "site 3 is missing"),
    ("out-modes-string", CUSTOM, "out_modes", "2231", TypeError, "out_modes"),
    ("out-mode-float", CUSTOM, "out_modes[0]", 2.5, TypeError, "out_modes[0]"),
    ("out-mode-zero", CUSTOM, "out_modes[3]", 0, ValueError, "out_modes[3]"),
    ("out-modes-too-small", CUSTOM, "out_modes", [1, 2, 3, 1], ValueError, "out_modes"),
    ("modes-of-different-lengths", CUSTOM, "out_modes", [4, 3, 1], ValueError,
     "out_modes and in_modes"),
    ("in-mode-bool", CUSTOM, "in_modes[1]", True, TypeError, "in_modes[1]"),
    ("in-features-float", CUSTOM, "in_features", 20.0, TypeError, "in_features"),
    ("in-features-string", CUSTOM, "in_features", "20", TypeError, "in_features"),
    ("out-features-zero", CUSTOM, "out_features", 0, ValueError, "out_features"),
    ("stage-float", CUSTOM, "cores[0].stage", 0.0, TypeError, "cores[0].stage"),
    ("stage-string", CUSTOM, "cores[0].stage", "0", TypeError, "cores[0].stage"),
    ("stage-negative", CUSTOM, "cores[0].stage", -1, ValueError, "cores[0].stage"),
    ("stage-missing", CUSTOM, "cores[0].stage", DELETE, ValueError, "cores[0]"),
    ("stage-gap", CUSTOM, "cores[6].stage", 3, ValueError, "no core has stage 2"),
    ("stage-huge", CUSTOM, "cores[6].stage", 10**12, ValueError, "no core has stage 2"),
    ("bond-dim-float", CUSTOM, "bonds[0].dim", 3.0, TypeError, "bonds[0].dim"),
    ("bond-dim-string", CUSTOM, "bonds[0].dim", "3", TypeError, "bonds[0].dim"),
    ("bond-dim-bool", CUSTOM, "bonds[0].dim", True, TypeError, "bonds[0].dim"),
    ("bond-dim-zero", CUSTOM, "bonds[0].dim", 0, ValueError, "bonds[0].dim"),
    ("bond-dim-missing", CUSTOM, "bonds[0].dim", DELETE, ValueError, "bonds[0]"),
    # every endpoint accounted for
    ("bond-third-endpoint", CUSTOM, "bonds[0].w", "c", ValueError,
     "bonds[0] has an unknown field 'w'"),
    ("bond-end-missing", CUSTOM, "bonds[0].u", DELETE, ValueError, "bonds[0]"),
    ("bond-end-not-a-core", CUSTOM, "bonds[0].u", "ghost", ValueError, "bonds[0].u"),
    ("bond-end-int", CUSTOM, "bonds[0].u", 5, TypeError, "bonds[0].u"),
    ("bond-end-list", CUSTOM, "bonds[0].v", ["a", "b"], TypeError, "bonds[0].v"),
    ("bond-to-itself", CUSTOM, "bonds[0].v", "a", ValueError, "bonds[0]"),
    ("bond-not-an-object", CUSTOM, "bonds[2]", ["b", "m", 2], TypeError, "bonds[2]"),
    ("bonds-not-a-list", CUSTOM, "bonds", {"u": "a"}, TypeError, "bonds"),
    ("disconnected-core", CUSTOM, "bonds[6]", DELETE, ValueError, "leave 2 tensors"),
    # names and fields
    ("name-int", CUSTOM, "cores[0].name", 5, TypeError, "cores[0].name"),
    ("name-empty", CUSTOM, "cores[0].name", "", ValueError, "cores[0].name"),
    ("name-repeated", CUSTOM, "cores[1].name", "a", ValueError, "cores[1].name"),
    ("core-field-misspelt", CUSTOM, "cores[0].stgae", 0, ValueError,
     "cores[0] has an unknown field 'stgae' (did you mean 'stage'?)"),
    ("graph-field-misspelt", CUSTOM, "out_mode", [2, 2, 3, 1], ValueError,
     "unknown field 'out_mode' (did you mean 'out_modes'?)"),
    ("core-not-an-object", CUSTOM, "cores[2]", "c", TypeError, "cores[2]"),
    ("cores-not-a-list", CUSTOM, "cores", {"a": {"stage": 0}}, TypeError, "cores"),
    ("cores-empty", CUSTOM, "cores", [], ValueError, "no cores"),
    ("kind-int", CUSTOM, "cores[0].kind", 3, TypeError, "cores[0].kind"),
    ("constant-string", CUSTOM, "cores[0].constant", "yes", TypeError, "cores[0].constant"),
    ("x-without-y", CUSTOM, "cores[0].x", 1.0, ValueError, "cores[0]"),
    ("format-other", CUSTOM, "format", "adntn-graph/2", ValueError, "format"),
    ("family-int", CUSTOM, "family", 3, TypeError, "family"),
    ("activation-int", CUSTOM, "activation", 5, TypeError, "activation"),
    ("activation-unknown", CUSTOM, "activation", "bogus", ValueError, "activation"),
    ("activation-wrong-count", CUSTOM, "activation", ["relu"], ValueError, "activation"),
    ("activation-entry-int", CUSTOM, "activation", [1, 2, 3], TypeError, "activation[0]"),
    # explicit axis order
    ("legs-bond-minus-one", LEGGED, "cores[0].legs[0].bond", -1, ValueError,
     "cores[0].legs[0].bond"),
    ("legs-bond-out-of-range", LEGGED, "cores[0].legs[0].bond", 99, ValueError,
     "cores[0].legs[0].bond"),
    ("legs-bond-elsewhere", LEGGED, "cores[0].legs[0].bond", 3, ValueError,
     "cores[0].legs[0].bond"),
    ("legs-bond-float", LEGGED, "cores[0].legs[0].bond", 0.0, TypeError,
     "cores[0].legs[0].bond"),
    ("legs-site-not-carried", LEGGED, "cores[0].legs[2].site", 1, ValueError,
     "cores[0].legs[2].site"),
    ("legs-incomplete", LEGGED, "cores[0].legs[2]", DELETE, ValueError, "cores[0].legs"),
    ("legs-twice", LEGGED, "cores[0].legs[1]", {"bond": 0}, ValueError, "cores[0].legs"),
    ("legs-entry-two-keys", LEGGED, "cores[0].legs[0].site", 0, ValueError,
     "cores[0].legs[0]"),
    ("legs-not-a-list", LEGGED, "cores[0].legs", "b0 b1 p0", TypeError, "cores[0].legs"),
    ("shape-mismatch", LEGGED, "cores[0].shape", [3, 2, 5], ValueError, "cores[0].shape"),
    # values and params
    ("value-too-short", CONST, "cores[7].value", [1.0], ValueError, "cores[7].value"),
    ("value-string-entry", CONST, "cores[7].value", [1.0, "0.5"], TypeError,
     "cores[7].value[1]"),
    ("value-nan", CONST, "cores[7].value", [1.0, float("nan")], ValueError, "cores[7].value[1]"),
    ("value-missing", CONST, "cores[7].value", DELETE, ValueError, "cores[7]"),
    ("value-deep", CONST, "cores[7].value", _deep(200), ValueError, "cores[7].value"),
    ("value-on-a-trainable-core", CUSTOM, "cores[0].value", [1.0], ValueError,
     "cores[0].value"),
    ("params-wrong-shape", CUSTOM, "cores[0].params", [[0.1] * 6] * 6, ValueError,
     "cores[0].params"),
    ("params-ragged", CUSTOM, "cores[0].params", _ragged(), ValueError, "cores[0].params[1][0]"),
    ("params-bool-entry", CUSTOM, "cores[0].params", [[[True] * 6] * 2] * 3, TypeError,
     "cores[0].params[0][0][0]"),
    ("params-on-a-constant", CONST, "cores[7].params", [1.0, 0.5], ValueError,
     "cores[7].params"),
]

# (id, text, error, words in the message)
TEXTS = [
    ("json-list", "[1, 2, 3]", TypeError, "must be an object"),
    ("json-number", "42", TypeError, "must be an object"),
    ("json-string", '"cores"', TypeError, "must be an object"),
    ("json-deep", "[" * 100_000 + "]" * 100_000, ValueError, "nests deeper"),
    ("json-broken", '{"cores": [', ValueError, "could not read the graph JSON"),
    ("json-not-a-file", "no/such/design.json", ValueError, "could not read the graph JSON"),
]


def networkx_cases():
    """(id, graph, error, words) for networkx input."""
    import networkx as nx

    def two(**extra):
        g = nx.Graph(in_features=4, out_features=4, **extra)
        g.add_node("a", stage=0, sites=[0])
        g.add_node("b", stage=1, sites=[1])
        g.add_edge("a", "b", dim=2)
        return g

    merged = nx.Graph(in_features=4, out_features=4)
    merged.add_node(5, stage=0, sites=[0])
    merged.add_node("5", stage=1, sites=[1])
    merged.add_edge(5, "5", dim=2)

    dangling = two()
    dangling.add_edge("a", "x", dim=2)

    both = two()
    both.nodes["a"]["site"] = 0

    extra_attr = two()
    extra_attr.nodes["a"]["colour"] = "red"

    float_site = two()
    float_site.nodes["b"]["sites"] = [1.0]

    return [
        ("nx-5-and-'5'", merged, ValueError, "nodes 5 and '5'"),
        ("nx-edge-to-a-non-core", dangling, ValueError, "'x' is not a core"),
        ("nx-site-and-sites", both, ValueError, "node 'a' has both 'site' and 'sites'"),
        ("nx-unknown-attribute", extra_attr, ValueError, "node 'a' has an unknown field"),
        ("nx-float-site", float_site, TypeError, "node 'b'.sites[0]"),
        ("nx-float-dim", _with_dim(two(), 2.0), TypeError, "edge 'a'–'b'.dim"),
    ]


def _with_dim(g, dim):
    g.edges["a", "b"]["dim"] = dim
    return g


_STEP = re.compile(r"\.?([A-Za-z_]\w*)|\[(\d+)\]")


def mutate(base, path, value):
    """A deep copy of ``base`` with ``path`` set to ``value`` (or removed for DELETE)."""
    spec = copy.deepcopy(base)
    keys = [name if name else int(index) for name, index in _STEP.findall(path)]
    target = spec
    for key in keys[:-1]:
        target = target[key]
    if value is DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = copy.deepcopy(value)
    return spec
