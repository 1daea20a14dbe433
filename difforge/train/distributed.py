"""Multi-process training through torchrun (DDP): NCCL on GPUs, gloo on CPUs.

The same code path runs with one process (no process group at all) and with N. Every rank
draws the random numbers of the *global* batch from the same (seed, step) generator and keeps
its slice, so N processes with batch B follow exactly the run of one process with batch N*B.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def timeout() -> datetime.timedelta:
    """How long a collective may wait before the group gives up (a dead rank must not hang the others)."""
    return datetime.timedelta(seconds=float(os.environ.get("DIFFORGE_DIST_TIMEOUT", "300")))


def init_from_env(device_name: str = "auto") -> DistInfo:
    """Join the process group that torchrun describes in the environment; a no-op for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timeout())
    return DistInfo(rank, world, local_rank)


def device_for(info: DistInfo, device_name: str) -> str:
    """Each rank on its own GPU (LOCAL_RANK); CPU ranks share the CPU."""
    if info.enabled and device_name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{info.local_rank}"
    return device_name


def wrap_ddp(net: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``net`` in DistributedDataParallel when several processes train, else ``net`` itself."""
    if not info.enabled:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= info.world_size
    return values


def all_gather_cat(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate equal-shaped tensors of every rank in rank order."""
    if not info.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(info.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def shutdown(info: DistInfo, finished: bool = True) -> None:
    """Leave the process group. After a normal end (``finished``) every rank first waits for the
    others: rank 0 still writes the preview and report when the others are done, and a rank that
    tore down its gloo connections meanwhile was seen to abort at exit ("terminate called without
    an active exception", SIGABRT), which made torchrun kill rank 0 mid-write. After an error
    there is no barrier, since the other ranks may never reach it."""
    if info.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def launch(argv: List[str], nproc: int, master_port: Optional[int] = None) -> int:
    """``difforge train --distributed --world-size N``: re-run the command under torchrun on this machine."""
    if nproc < 1:
        raise ConfigError(f"--world-size must be >= 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    cmd += ["--master-port", str(master_port)] if master_port else ["--standalone"]
    # torchrun would read "--run" as an ambiguous prefix of its own --run-path
    argv = ["--run-name" if a == "--run" else ("--run-name=" + a[6:] if a.startswith("--run=") else a) for a in argv]
    cmd += ["-m", "difforge", *argv]
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:  # share the cores instead of oversubscribing them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    return subprocess.call(cmd, env=env)
