"""Data-parallel launching: ``--nproc N`` spawns N local processes; ``torchrun`` (multi-node too) sets the
environment that :func:`init_from_env` reads. gloo on CPU, NCCL on CUDA."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist


def backend_for_device() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_from_env() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); False when running alone."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return dist.is_initialized()
    dist.init_process_group(backend_for_device())
    _share_cores(dist.get_world_size())
    return True


def _share_cores(nproc: int) -> None:
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, nproc: int, port: int, fn, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(nproc))
    dist.init_process_group(backend_for_device(), rank=rank, world_size=nproc)
    _share_cores(nproc)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def launch(fn, nproc: int, *args) -> None:
    """Run ``fn(*args)`` in ``nproc`` local processes forming one process group."""
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"argument 'nproc' must be a positive integer, got {nproc!r}")
    torch.multiprocessing.start_processes(_worker, args=(nproc, _free_port(), fn, args), nprocs=nproc,
                                          start_method="spawn")


def world() -> tuple[int, int]:
    """(rank, world size) of the process group; (0, 1) when running alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def world_rank() -> int:
    """This process's rank (0 when not distributed), from the process group or torchrun's environment."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))
