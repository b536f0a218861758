"""A two-rank job whose rank 1 dies after the first collective (see test_distributed.py)."""

import os

import torch
import torch.distributed as dist

from adntn_lab.train.distributed import init_distributed

init_distributed(timeout=600)
t = torch.ones(1)
dist.all_reduce(t)
if dist.get_rank() == 1:
    os._exit(3)
while True:  # without the agent stopping it, rank 0 would wait here for its peer
    dist.all_reduce(t)
