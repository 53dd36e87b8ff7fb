"""Device choice and mixed precision: CPU first, CUDA (with AMP) only when present."""

from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager

import torch


def pick_device(name: str | None = None) -> torch.device:
    """``name`` if given, else CUDA when available, else CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> ContextManager:
    """float16 autocast on CUDA; a no-op elsewhere (CPU runs in float32)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return nullcontext()


#: Sliding windows per forward pass on a GPU: each window already carries the K prompts, so 8 windows of 48³ are
#: a batch of 8 K patches, well within a GPU's memory; on the CPU batching buys nothing and only costs memory.
CUDA_WINDOW_BATCH = 8


def window_batch(device: torch.device) -> int:
    """Sliding windows segmented in one forward pass on ``device``."""
    return CUDA_WINDOW_BATCH if device.type == "cuda" else 1
