"""One network of the study: built around a copy of the frozen backbone and trained with a profile's fixed schedule
on working-grid crops (the server's training code, :func:`models.training.train_prompts`)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from models.slpt import SLPTConfig, SLPTNet
from models.training import Progress, TrainConfig, train_prompts
from sim.prepared import cascade_of
from sim.profiles import Schedule, SimProfile


def build_network(backbone: torch.nn.Module, tuning: str, profile: SimProfile, seed: int) -> SLPTNet:
    """A fresh network around (a copy of) the frozen backbone, configured by the profile."""
    torch.manual_seed(seed)
    config = SLPTConfig(
        num_prompts=profile.num_prompts, mode=tuning, seed=seed, roi_size=(profile.patch,) * 3,
        cascade=cascade_of(profile),
        fpu_rank=profile.fpu_rank, prompt_stages=profile.prompt_stages,
        head_reads_stages=profile.head_reads_stages, head_kernel=profile.head_kernel,
        head_reads_image=profile.head_reads_image,
    )
    return SLPTNet(copy.deepcopy(backbone), config)


def train_network(
    backbone: torch.nn.Module, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], tuning: str,
    schedule: Schedule, profile: SimProfile, seed: int, progress: Progress | None = None,
    network: SLPTNet | None = None, lr_decay: str | None = None,
) -> tuple[SLPTNet, float]:
    """Train a fresh network (or ``network``, built by :func:`build_network`) on working-grid crops:
    -> (network, seconds). ``lr_decay``: :attr:`models.training.TrainConfig.lr_decay`, the profile's unless given
    (the development sweep compares both)."""
    network = network or build_network(backbone, tuning, profile, seed)
    schedule_config = TrainConfig(
        steps=schedule.steps, lr=schedule.lr, batch_per_prompt=profile.batch_per_prompt, seed=seed,
        class_ratios=profile.class_ratios, lr_decay=lr_decay or profile.lr_decay,
    )
    result = train_prompts(network, list(zip(images, labels)), schedule_config, progress=progress)
    return network, result.time_s
