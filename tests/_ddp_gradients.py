"""Each rank: one DDP backward pass of a float64 ADNTN layer per family over its share of a
fixed global batch; rank 0 saves the initial state and the averaged gradients (see
test_distributed.py)."""

import sys

import numpy as np
import torch

from adntn_lab.nn import ADNTNLinear
from adntn_lab.train.distributed import DataParallel, init_distributed, shutdown_distributed

FAMILIES = {"ttn": {"bond_dim": 2}, "mera": {"bond_dim": 2}, "brickwall": {"depth": 2},
            "mpo": {"bond_dim": 2}}


def batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(13, 32, generator=g, dtype=torch.float64), torch.randint(0, 16, (13,),
                                                                                generator=g)


def layer(family):
    torch.manual_seed(0)  # the bias is initialised from torch's global random state
    return ADNTNLinear(32, 16, topology=family, seed=1, dtype=torch.float64, **FAMILIES[family])


if __name__ == "__main__":
    env = init_distributed(timeout=120)
    x, y = batch()
    data = torch.utils.data.TensorDataset(x, y)
    grads = {}
    for family in FAMILIES:
        model = layer(family)
        for name, t in model.state_dict().items():  # what the reference starts from
            grads[f"init/{family}/{name}"] = t.numpy().copy()
        par = DataParallel(model, data, batch_size=13, seed=0, device=torch.device("cpu"))
        idx, n = par.batch(0)
        par.loss(par.net(x[idx]), y[idx], n).backward()
        for name, p in model.named_parameters():
            grads[f"{family}/{name}"] = p.grad.numpy()
    if env.rank == 0:
        np.savez(sys.argv[1], **grads)
    shutdown_distributed()
