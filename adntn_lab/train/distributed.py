"""Data-parallel training with :mod:`torch.distributed`: environment, sampler, launcher.

One training run spread over ``N`` processes ("ranks") on one machine: every rank holds the whole
model, takes its share of each global batch, and DDP (``DistributedDataParallel``) averages the
gradients, so a step equals the step of one process on the whole global batch (up to float
rounding). The pieces:

- :func:`read_env` / :func:`init_distributed` read the variables torchrun sets (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and start the process group:
  gloo on CPU, nccl on CUDA, with a timeout so that ranks stop instead of hanging when a peer
  is gone;
- :class:`GlobalBatchSampler`, a ``DistributedSampler`` that deals out the single-process data
  order of :func:`~adntn_lab.train.loop.epoch_order`, reseeded every epoch, so the global batch
  means the same whatever the number of ranks;
- :class:`DataParallel`, what :func:`~adntn_lab.train.loop.fit` uses for one global batch
  (``fit(..., distributed=True)``);
- :func:`launch`, which starts ``python -m adntn_lab ARGS`` in ``N`` ranks through torch's
  elastic agent (the machinery behind torchrun) with its store bound to 127.0.0.1 only; it is
  what ``adntn-lab train --nproc N`` calls.

Only rank 0 writes files and shows progress bars (:func:`is_main_process`).
"""

from __future__ import annotations

import datetime
import ipaddress
import math
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DistributedSampler

__all__ = [
    "DEFAULT_TIMEOUT",
    "DataParallel",
    "DistEnv",
    "GlobalBatchSampler",
    "LaunchError",
    "THREADS_PER_PROCESS",
    "init_distributed",
    "is_main_process",
    "launch",
    "read_env",
    "shutdown_distributed",
]

# seconds a collective (or the start-up rendezvous) may wait for a peer before it fails
DEFAULT_TIMEOUT = 300.0
# torch CPU threads of each rank or sweep worker unless told otherwise: these layers are small,
# one thread is the demo's fastest setting, and on a shared machine several threads per
# process were measured up to ten times slower (benchmarks/bench_parallel.py)
THREADS_PER_PROCESS = 1
_REQUIRED = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class LaunchError(RuntimeError):
    """A rank of a data-parallel run failed; the others were stopped."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a data-parallel run (from torchrun's variables)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int


def _int_var(environ: Mapping[str, str], name: str) -> int:
    text = environ[name]
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer") from None


def read_env(environ: Mapping[str, str] | None = None) -> DistEnv | None:
    """The data-parallel position of this process, or None outside a distributed launch.

    Parameters
    ----------
    environ : mapping, optional
        Defaults to ``os.environ``.

    Raises
    ------
    ValueError
        When the environment is half set up (e.g. ``RANK`` without ``WORLD_SIZE``) or
        inconsistent (``RANK >= WORLD_SIZE``); the message names what is missing and how to
        launch instead.
    """
    env = os.environ if environ is None else environ
    present = [k for k in (*_REQUIRED, "LOCAL_RANK") if k in env]
    if not present:
        return None
    missing = [k for k in _REQUIRED if k not in env]
    if missing:
        raise ValueError(
            f"the environment is half set up for distributed training: {', '.join(present)} "
            f"set but {', '.join(missing)} missing. Launch with 'adntn-lab train --nproc N "
            "...' or 'torchrun --nproc_per_node N -m adntn_lab train ...', or unset "
            f"{', '.join(present)} to train in one process"
        )
    rank, world = _int_var(env, "RANK"), _int_var(env, "WORLD_SIZE")
    port = _int_var(env, "MASTER_PORT")
    local_rank = _int_var(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
    local_world = (_int_var(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else world)
    if world < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {world}")
    if not 0 <= rank < world:
        raise ValueError(f"RANK must lie in 0 .. WORLD_SIZE-1 = {world - 1}, got {rank}")
    if not 0 <= local_rank < max(local_world, 1):
        raise ValueError(f"LOCAL_RANK must lie in 0 .. {local_world - 1}, got {local_rank}")
    if not 0 < port < 65536:
        raise ValueError(f"MASTER_PORT must be a TCP port 1..65535, got {port}")
    return DistEnv(rank, world, local_rank, local_world, env["MASTER_ADDR"], port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def init_distributed(
    device: str | torch.device = "cpu",
    *,
    backend: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    environ: Mapping[str, str] | None = None,
) -> DistEnv | None:
    """Start the default process group from torchrun's variables (no-op outside a launch).

    Parameters
    ----------
    device : str or torch.device, default "cpu"
        The training device; ``"cuda"`` becomes ``cuda:LOCAL_RANK``.
    backend : {"gloo", "nccl"}, optional
        Default: gloo on CPU, nccl on CUDA.
    timeout : float, default 300
        Seconds a collective waits for a peer before it raises (a dead rank then stops the
        others instead of leaving them hanging).

    Returns
    -------
    DistEnv or None
        None when the process was not launched for distributed training.
    """
    import torch.distributed as dist

    env = read_env(environ)
    if env is None:
        return None
    if not dist.is_available():
        raise ValueError("this torch build has no torch.distributed; train in one process")
    dev = torch.device(device)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"unknown backend {backend!r}; use 'gloo' (CPU) or 'nccl' (CUDA)")
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError("the nccl backend needs a CUDA device; use device 'cuda' or gloo")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    if backend == "gloo" and _is_loopback(env.master_addr):
        # gloo otherwise picks the interface of the host name, which may face the network
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if dist.is_initialized():
        return env
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout)))
    return env


def shutdown_distributed(*, wait: bool = True) -> None:
    """Destroy the default process group if one is running.

    With ``wait`` (the default) every rank first waits for the others, so none tears its
    connections down while rank 0 still writes the run folder.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` when none is running."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 and in a single process: the one that writes files and shows progress."""
    return world()[0] == 0


# ----------------------------------------------------------------------------- sampling


class GlobalBatchSampler(DistributedSampler):
    """This rank's share of every global batch of the single-process data order.

    Epoch ``e`` visits the examples in the order :func:`~adntn_lab.train.loop.epoch_order`
    draws from ``(seed, e)`` -- the order of a one-process run -- cut into global batches of
    ``batch_size``; each global batch is split into ``num_replicas`` contiguous parts (sizes
    differ by at most one) and this rank takes part ``rank``. Call :meth:`set_epoch` at the
    start of every epoch, as for any ``DistributedSampler``.

    Parameters
    ----------
    dataset : sized
    batch_size : int
        The global batch size (the same number as in a one-process run).
    num_replicas, rank : int, optional
        Default: from the running process group.
    seed : int, default 0
    """

    def __init__(self, dataset, batch_size: int, *, num_replicas: int | None = None,
                 rank: int | None = None, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                         seed=seed, drop_last=False)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        self.n = len(dataset)
        self.num_batches = math.ceil(self.n / batch_size)
        self._order: torch.Tensor | None = None
        self._order_epoch: int | None = None

    def _global_order(self) -> torch.Tensor:
        from .loop import epoch_order

        if self._order_epoch != self.epoch:
            self._order = epoch_order(self.n, self.seed, self.epoch)
            self._order_epoch = self.epoch
        return self._order

    def global_batch(self, b: int) -> torch.Tensor:
        """Indices of global batch ``b`` of the current epoch (all ranks together)."""
        return self._global_order()[b * self.batch_size: (b + 1) * self.batch_size]

    def local_batch(self, b: int) -> torch.Tensor:
        """This rank's part of global batch ``b`` (possibly empty for a short last batch)."""
        return torch.tensor_split(self.global_batch(b), self.num_replicas)[self.rank]

    def __iter__(self):
        for b in range(self.num_batches):
            yield from self.local_batch(b).tolist()

    def __len__(self) -> int:
        return sum(len(self.local_batch(b)) for b in range(self.num_batches))


class DataParallel:
    """One global batch of :func:`~adntn_lab.train.loop.fit` spread over the ranks.

    Wraps ``model`` in ``DistributedDataParallel`` (which broadcasts rank 0's weights and
    averages gradients during ``backward``). The loss of a rank's part is scaled so that the
    average DDP forms is the mean over the whole global batch, also when the parts differ in
    size; batch statistics and stop requests are agreed across ranks.
    """

    def __init__(self, model: torch.nn.Module, dataset, *, batch_size: int, seed: int,
                 device: torch.device):
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "distributed=True needs a running process group: launch with 'adntn-lab train "
                "--nproc N' or torchrun and call adntn_lab.train.distributed.init_distributed() "
                "first, or train in one process with distributed=False"
            )
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if batch_size < self.world_size:
            raise ValueError(
                f"batch_size {batch_size} is smaller than the {self.world_size} ranks; the "
                "batch size is the global batch shared by all ranks, so use at least one "
                "example per rank"
            )
        self.device = device
        self.is_main = self.rank == 0
        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        self.net = DistributedDataParallel(model, device_ids=ids)
        self.sampler = GlobalBatchSampler(dataset, batch_size, num_replicas=self.world_size,
                                          rank=self.rank, seed=seed)
        # collectives of gloo run on CPU tensors, nccl's on the device
        self._comm = device if dist.get_backend() == "nccl" else torch.device("cpu")

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def batch(self, b: int) -> tuple[torch.Tensor, int]:
        """``(this rank's indices, size of the global batch)`` of global batch ``b``."""
        return self.sampler.local_batch(b), len(self.sampler.global_batch(b))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, global_count: int):
        """Cross-entropy whose DDP average over ranks is the global batch's mean loss."""
        total = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        return total * (self.world_size / global_count)

    def batch_metrics(self, loss_sum: float, correct: int, count: int) -> tuple[float, int, int]:
        """Summed ``(loss_sum, correct, count)`` of the global batch, the same on every rank."""
        import torch.distributed as dist

        t = torch.tensor([loss_sum, float(correct), float(count)], dtype=torch.float64,
                         device=self._comm)
        dist.all_reduce(t)
        return float(t[0]), int(round(float(t[1]))), int(round(float(t[2])))

    def agree(self, keep: bool) -> bool:
        """True only if every rank wants to continue (a stop on one rank stops all)."""
        import torch.distributed as dist

        t = torch.tensor([0.0 if keep else 1.0], device=self._comm)
        dist.all_reduce(t)
        return float(t[0]) == 0.0


# ----------------------------------------------------------------------------- launching


def _loopback_store(timeout: float):
    """A TCPStore server listening on 127.0.0.1 only, on a free port.

    torch's own stores listen on every interface; the elastic agent's static rendezvous is
    multi-tenant, so a store created here first on the same port is the one it uses.
    """
    import torch.distributed as dist

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    # the store's server owns the socket from here on (and closes it)
    store = dist.TCPStore("127.0.0.1", port, is_master=True, multi_tenant=True,
                          master_listen_fd=sock.detach(), wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=float(timeout)))
    return store, port


def launch(
    args: Sequence[str],
    nproc: int,
    *,
    threads: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    log_dir: str | os.PathLike | None = None,
    module: str = "adntn_lab",
) -> None:
    """Run ``python -m adntn_lab ARGS`` in ``nproc`` ranks on this machine and wait.

    Uses torch's elastic agent (``torch.distributed.launcher``, what torchrun runs) with a
    static rendezvous on a store bound to 127.0.0.1, gloo over the loopback interface, no
    restarts: when one rank fails the agent stops the others.

    Parameters
    ----------
    args : sequence of str
        The ``adntn-lab`` command line of each rank (without ``--nproc``).
    nproc : int
        Number of ranks.
    threads : int, optional
        CPU threads per rank (``OMP_NUM_THREADS``); default :data:`THREADS_PER_PROCESS` (1,
        as torchrun) unless ``OMP_NUM_THREADS`` is already set.
    timeout : float, default 300
        Seconds the rendezvous waits for all ranks.
    log_dir : path, optional
        Write each rank's stdout/stderr to ``log_dir/<run>/attempt_0/<rank>/``; default: the
        ranks print to this terminal.
    module : str, default "adntn_lab"
        The module each rank runs with ``python -m``.

    Raises
    ------
    LaunchError
        When a rank exits with an error (the message names the first one and its exit code).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive int, got {nproc!r}")
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "GLOO_SOCKET_IFNAME")}
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(int(threads))
    else:
        os.environ.setdefault("OMP_NUM_THREADS", str(THREADS_PER_PROCESS))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    logs_specs = None
    if log_dir is not None:
        from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std

        logs_specs = DefaultLogsSpecs(log_dir=str(log_dir), redirects=Std.ALL)
    store, port = _loopback_store(timeout)
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"adntn-{os.getpid()}",
        rdzv_backend="static", rdzv_endpoint=f"127.0.0.1:{port}",
        rdzv_configs={"rank": 0, "timeout": int(timeout)}, max_restarts=0,
        monitor_interval=0.2, start_method="spawn",
        **({"logs_specs": logs_specs} if logs_specs is not None else {}),
    )
    try:
        elastic_launch(config, sys.executable)("-m", module, *map(str, args))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise LaunchError(
            f"rank {rank} of {nproc} failed with exit code {failure.exitcode}"
            + (f" (see {failure.error_file})"
               if failure.error_file and os.path.exists(failure.error_file) else "")
            + "; the other ranks were stopped. Its error is printed above"
        ) from None
    finally:
        del store
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
