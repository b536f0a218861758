"""Network designs shared by several test modules."""

CUSTOM = {
    "format": "adntn-graph/1",
    "in_features": 20,
    "out_features": 12,
    "out_modes": [2, 2, 3, 1],
    "in_modes": [3, 2, 2, 2],
    "cores": [
        {"name": "a", "stage": 0, "sites": [0]},
        {"name": "b", "stage": 0, "sites": [1]},
        {"name": "c", "stage": 0, "sites": [2]},
        {"name": "d", "stage": 0, "sites": [3]},
        {"name": "m", "stage": 1, "sites": []},
        {"name": "n", "stage": 1, "sites": []},
        {"name": "t", "stage": 2, "sites": []},
    ],
    "bonds": [
        {"u": "a", "v": "b", "dim": 3},
        {"u": "a", "v": "m", "dim": 2},
        {"u": "b", "v": "m", "dim": 2},
        {"u": "c", "v": "n", "dim": 3},
        {"u": "m", "v": "t", "dim": 2},
        {"u": "n", "v": "t", "dim": 2},
        {"u": "d", "v": "t", "dim": 3},
    ],
}


def small_run_config(**changes):
    """A run that trains FC-2 with a TTN hidden layer on the digits in about a second."""
    from adntn_lab.train.config import RunConfig

    base = dict(model="fc2", dataset="digits", family="ttn", bond_dim=2, hidden=24,
                batch_size=128, epochs=2, lr=1e-2, seed=0)
    return RunConfig(**{**base, **changes})
