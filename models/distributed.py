"""Data-parallel training: one process per GPU, ``DistributedDataParallel``, still one training job.

:func:`train_on_devices` is what the app's train task calls. With more than one visible CUDA device it starts one
process per device (NCCL over 127.0.0.1) and runs :func:`models.training.train_prompts` in each, inside the process
group; otherwise it trains in this process. The same code runs on CPU processes with gloo, which is how the suite
tests it on a machine without GPUs (docs/design.md, "Deployment: the image, compose and GPUs").

Every rank trains the same bootstrap bags on its own patches; DDP averages the gradients after each backward pass, so
the ranks stay in step (equal up to the rounding of the gradient sums) and one step sees ``world_size`` times the
batch. Rank 0 reports progress, and its weights are the result.
"""

from __future__ import annotations

import dataclasses
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.device import pick_device
from models.errors import ModelError
from models.training import Case, Progress, TrainConfig, TrainResult, prepare_cases, train_prompts

if TYPE_CHECKING:
    from models.slpt import SLPTNet

def training_gpus(device: str | None, limit: int = 0) -> int:
    """GPUs one training uses: all visible (or ``limit``) when ``device`` is CUDA or automatic, else 0."""
    if device not in (None, "auto", "cuda") or not torch.cuda.is_available():
        return 0
    visible = torch.cuda.device_count()
    return min(visible, limit) if limit else visible


def train_on_devices(
    model: SLPTNet, cases: Sequence[Case], cfg: TrainConfig, progress: Progress | None = None, gpus: int = 0
) -> TrainResult:
    """Train ``model`` in place on ``gpus`` GPUs data-parallel when there are two or more, else in this process."""
    if gpus < 2:
        return train_prompts(model, cases, cfg, progress)
    return train_data_parallel(model, cases, cfg, gpus, backend="nccl", progress=progress)


def train_data_parallel(
    model: SLPTNet, cases: Sequence[Case], cfg: TrainConfig, world_size: int, backend: str = "nccl",
    progress: Progress | None = None,
) -> TrainResult:
    """Train ``model`` on ``world_size`` processes (``nccl``: one GPU each; ``gloo``: CPU processes).

    Stage 1 of the cascade (the liver ROIs) runs once, here; rank 0's trained weights are loaded back into
    ``model``, which is left on ``cfg.device`` (CUDA when present: the first GPU). Raises:
        ModelError: a rank failed.
    """
    data = prepare_cases(model, cases)
    context = mp.get_context("spawn")
    updates = context.SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="slpt-ddp-") as folder:
        processes = mp.start_processes(
            _train_rank, args=(world_size, backend, _free_port(), model.cpu(), data, cfg, folder, updates),
            nprocs=world_size, join=False, start_method="spawn",
        )
        try:
            while not processes.join(timeout=0.5):
                _forward_progress(updates, progress)
        except mp.ProcessRaisedException as error:
            raise ModelError(f"data-parallel training failed: {error}") from error
        _forward_progress(updates, progress)
        saved = torch.load(Path(folder) / "rank0.pt", weights_only=False)
    model.load_state_dict(saved["state"])
    model.to(pick_device(cfg.device))  # where train_prompts leaves it: scoring with it follows on that device
    result = TrainResult(**saved["result"])
    return dataclasses.replace(result, device=f"{world_size}x{result.device}")


def _train_rank(
    rank: int, world_size: int, backend: str, port: int, model: SLPTNet, data: list, cfg: TrainConfig, folder: str,
    updates,
) -> None:
    device = f"cuda:{rank}" if backend == "nccl" else "cpu"
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        report = (lambda done, total, loss: updates.put((done, total, loss))) if rank == 0 else None
        result = train_prompts(model, data, dataclasses.replace(cfg, device=device), progress=report)
        if rank == 0:  # every rank holds the same weights (up to the rounding of the gradient sums): rank 0's publish
            state = {name: value.detach().cpu() for name, value in model.state_dict().items()}
            torch.save({"state": state, "result": dataclasses.asdict(result)}, Path(folder) / "rank0.pt")
    finally:
        dist.destroy_process_group()


def _forward_progress(updates, progress: Progress | None) -> None:
    while not updates.empty():
        done, total, loss = updates.get()
        if progress:
            progress(done, total, loss)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
