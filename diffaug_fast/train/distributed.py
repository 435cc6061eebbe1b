"""Data-parallel launching: ``--nproc N`` spawns N local processes; ``torchrun`` (multi-node too) sets the
environment that :func:`init_from_env` reads. NCCL when the run trains on CUDA (``--device auto`` on a machine
with GPUs, or ``cuda`` / ``cuda:N``), each process on GPU ``LOCAL_RANK``; gloo otherwise (``--device cpu``)."""
from __future__ import annotations

import os
import signal
import socket
import threading

import torch
import torch.distributed as dist

from diffaug_fast.errors import TrainingStopped


def backend_for_device(device: str = "auto") -> str:
    """The collective backend for a run on ``device`` (the --device option): NCCL on CUDA, gloo on the CPU."""
    on_cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    return "nccl" if on_cuda else "gloo"


def _join(device: str, **kwargs) -> None:
    backend = backend_for_device(device)
    if backend == "nccl":  # this process's GPU, before NCCL creates its communicator on it
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(torch.device(device).index if ":" in device else local % torch.cuda.device_count())
    dist.init_process_group(backend, **kwargs)
    if backend == "gloo":  # the processes share this machine's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE",
                                                                                dist.get_world_size()))))


def init_from_env(device: str = "auto") -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); False when running alone."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return dist.is_initialized()
    _join(device)
    return True


def collective_device() -> torch.device:
    """Where a tensor for a collective must live: the current GPU under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, nproc: int, port: int, device: str, fn, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc))
    _join(device, rank=rank, world_size=nproc)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def launch(fn, nproc: int, *args, device: str = "auto") -> None:
    """Run ``fn(*args)`` in ``nproc`` local processes forming one process group for a run on ``device``."""
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"argument 'nproc' must be a positive integer, got {nproc!r}")
    context = torch.multiprocessing.start_processes(_worker, args=(nproc, _free_port(), device, fn, args),
                                                    nprocs=nproc, start_method="spawn", join=False)
    forwarded = []

    def forward(signum, _frame):  # `kill` or a scheduler may signal this process alone: every rank saves and stops
        forwarded.append(signum)
        _signal_alive(context.processes, signum)

    main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous = signal.signal(signal.SIGTERM, forward) if main_thread else None
    try:
        while not context.join():
            pass
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if forwarded:  # the ranks stopped quietly (a KeyboardInterrupt ends a spawned process with status 0)
        raise TrainingStopped(forwarded[0])


def _signal_alive(processes, signum: int) -> None:
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signum)


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
