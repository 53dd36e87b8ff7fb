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


def cpu_fast_layout(model: torch.nn.Module) -> torch.nn.Module:
    """On the CPU, keep a network's weights channels-last (``torch.channels_last_3d``), the layout oneDNN's 3D
    convolutions are fastest in; on other devices leave it as it is. Returns ``model`` (changed in place).

    Measured with one thread, UNet 16-32-64-128 with K = 3 prompts: a prompt-tuning step on 6 patches of 48³ 1.32 s
    against 1.07 s, all prompts over an 80 × 70 × 60 liver ROI 1.53 s against 1.16 s. The values are the same; only
    float rounding differs (about 1e-6 on probabilities). Training puts its network in this layout, which it keeps for
    inference; whoever reads a trained network back to compute what the trained one would (the simulator's model
    store) puts it in the same layout.
    """
    first = next(model.parameters(), None)
    if first is not None and first.device.type == "cpu":
        model.to(memory_format=torch.channels_last_3d)
    return model
