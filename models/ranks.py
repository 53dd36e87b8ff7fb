"""Where this process stands in a data-parallel training (:mod:`models.distributed`), for the training loop.

Kept apart from both the loop (:mod:`models.training`) and the launcher (:mod:`models.distributed`), which builds on
the loop: the loop needs only these primitives, so neither module imports the other back.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

#: Offset between the augmentation seeds of two ranks (a prime, so rank seeds never meet prompt seeds).
RANK_SEED_STRIDE = 7919


def in_process_group() -> bool:
    return dist.is_available() and dist.is_initialized()


def process_rank() -> int:
    """This process's rank in the training process group; 0 outside one."""
    return dist.get_rank() if in_process_group() else 0


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DDP inside a process group (its forward averages gradients); else ``model`` itself."""
    if not in_process_group():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
