"""One loop for diversified prompt tuning and for the full fine-tuning baseline (docs/design.md, "Diversified prompt tuning").

Prompt mode: every step draws one patch (or ``batch_per_prompt`` patches) per prompt k from prompt k's
own bootstrap resample of the labelled cases (bagging), augments it with prompt k's family
(:mod:`models.augment`), and trains all K prompts in ONE batched forward pass with Dice + CE. Only the
prompts, FPUs and head are optimised (AdamW, default lr 3e-2).

Fine-tune mode (``model.mode == "finetune"``): the same loop with K = 1, the full labelled set (no
bootstrap), all augmentation families chained, and every parameter optimised (default lr 1e-3).

The model is moved to the training device (CUDA when present, with float16 autocast) and left there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.losses import DiceCELoss

from models.augment import FAMILIES, family_name, make_sampler
from models.device import autocast, pick_device
from models.errors import ModelError
from models.inference import predict
from models.preprocess import VolumeSource, load_volume, window_hu
from models.slpt import SLPTNet

#: ``progress(step_done, total_steps, loss)``, called after every optimisation step.
Progress = Callable[[int, int, float], None]
Case = tuple[VolumeSource, VolumeSource]

DEFAULT_LR = {"prompt": 3e-2, "finetune": 1e-3}


@dataclass(frozen=True)
class TrainConfig:
    """Schedule of :func:`train_prompts`.

    Attributes:
        steps: optimisation steps.
        lr: AdamW learning rate; None = 3e-2 for prompts, 1e-3 for fine-tuning.
        weight_decay: AdamW weight decay.
        batch_per_prompt: patches per prompt per step (batch size = K * batch_per_prompt).
        bootstrap: give each prompt its own bootstrap resample of the cases (prompt mode only).
        seed: seeds the bootstrap draws, case order and augmentations.
        device: "cpu", "cuda", …; None = CUDA when available.
    """

    steps: int = 300
    lr: float | None = None
    weight_decay: float = 1e-4
    batch_per_prompt: int = 1
    bootstrap: bool = True
    seed: int = 0
    device: str | None = None


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        losses: training loss after each step (mean over the batch).
        time_s: wall time of the loop.
        steps: steps run.
        device: device trained on.
        case_indices: per prompt, the case indices it trained on (its bootstrap resample).
        families: per prompt, its augmentation families.
    """

    losses: list[float]
    time_s: float
    steps: int
    device: str
    case_indices: list[list[int]] = field(default_factory=list)
    families: list[list[str]] = field(default_factory=list)


def load_cases(
    cases: Sequence[Case], num_classes: int, hu_window: tuple[float, float]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Load and window labelled cases: -> [(image (1,D,H,W) float32 in [0,1], label (1,D,H,W) int64)].

    Raises:
        ModelError: no cases, image/label shape mismatch, or label values outside 0..num_classes-1.
    """
    if not cases:
        raise ModelError("no labelled cases to train on")
    loaded = []
    for i, (image_source, label_source) in enumerate(cases):
        image, label = load_volume(image_source), load_volume(label_source)
        if image.shape != label.shape:
            raise ModelError(f"case {i}: image shape {image.shape} != label shape {label.shape}")
        label = np.rint(label).astype(np.int64)
        if label.min() < 0 or label.max() >= num_classes:
            raise ModelError(f"case {i}: label values {sorted(np.unique(label).tolist())} outside 0..{num_classes - 1}")
        loaded.append((window_hu(image, hu_window)[None], label[None]))
    return loaded


def train_prompts(
    model: SLPTNet, cases: Sequence[Case], cfg: TrainConfig = TrainConfig(), progress: Progress | None = None
) -> TrainResult:
    """Prompt-tune (or, for a fine-tune-mode model, fine-tune) ``model`` on labelled cases.

    Args:
        model: the network; trained in place.
        cases: (image, label) pairs — (D, H, W) arrays in HU / integer classes, or NIfTI paths.
        cfg: schedule.
        progress: called after every step.
    """
    data = load_cases(cases, model.config.num_classes, model.config.hu_window)
    device = pick_device(cfg.device)
    model.to(device).train()
    rng = np.random.default_rng(cfg.seed)
    k = model.num_prompts
    n = len(data)

    if model.mode == "prompt":
        case_indices = [
            sorted(rng.choice(n, size=n, replace=True).tolist()) if cfg.bootstrap else list(range(n)) for _ in range(k)
        ]
        families = [[family_name(p)] for p in range(k)]
    else:
        case_indices, families = [list(range(n))], [list(FAMILIES)]
    samplers = [
        make_sampler(model.config.roi_size, model.config.num_classes, families[p], seed=cfg.seed * 1000 + p)
        for p in range(k)
    ]
    prompt_index = torch.arange(k, device=device).repeat_interleave(cfg.batch_per_prompt)

    optimizer, scaler, loss_fn = training_parts(model, cfg, device)
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(cfg.steps):
        patches = [
            samplers[p](*data[case_indices[p][rng.integers(n)]])
            for p in range(k)
            for _ in range(cfg.batch_per_prompt)
        ]
        images = torch.stack([image for image, _ in patches]).to(device)
        labels = torch.stack([label for _, label in patches]).to(device)
        losses.append(training_step(model, optimizer, scaler, loss_fn, images, labels, prompt_index))
        if progress:
            progress(step + 1, cfg.steps, losses[-1])
    return TrainResult(
        losses=losses, time_s=time.perf_counter() - start, steps=cfg.steps, device=str(device),
        case_indices=case_indices, families=families,
    )


def training_parts(
    model: SLPTNet, cfg: TrainConfig, device: torch.device
) -> tuple[torch.optim.AdamW, torch.amp.GradScaler, DiceCELoss]:
    """The optimiser, gradient scaler and loss of :func:`train_prompts`.

    AdamW over ``model.tunable_parameters()`` (lr ``cfg.lr`` or the mode's default), a gradient scaler that is
    active only on CUDA (where the forward pass runs in float16), and Dice + CE on softmax logits. The Dice
    term is batch Dice (nnU-Net style): per-patch Dice would punish any tumour probability in the many
    patches without tumour and push small lesions to zero.
    """
    optimizer = torch.optim.AdamW(
        model.tunable_parameters(), lr=cfg.lr or DEFAULT_LR[model.mode], weight_decay=cfg.weight_decay
    )
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    return optimizer, scaler, DiceCELoss(to_onehot_y=True, softmax=True, batch=True)


def training_step(
    model: SLPTNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: DiceCELoss,
    images: torch.Tensor,
    labels: torch.Tensor,
    prompt_index: torch.Tensor,
) -> float:
    """One optimisation step: forward (float16 autocast on CUDA), Dice + CE, backward, optimiser step.

    Args:
        images: (B, in_channels, *roi) on the model's device.
        labels: (B, 1, *roi) long class indices.
        prompt_index: (B,) long prompt of each item (ignored in fine-tune mode).

    Returns:
        The batch loss (reading it waits for the step to finish on the device).
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(images.device):
        logits = model(images, prompt_index)
    loss = loss_fn(logits.float(), labels)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def measure_prompt_disagreement(model: SLPTNet, images: Sequence[VolumeSource]) -> float:
    """Mean pairwise disagreement of the K prompts on held-out volumes.

    Per volume: mean pairwise JS divergence of the K softmax maps over the voxels any prompt calls
    foreground (0 when none does); then the mean over volumes.
    """
    if not images:
        raise ModelError("no volumes to measure disagreement on")
    scores = []
    for image in images:
        prediction = predict(model, image)
        mask = prediction.foreground_any
        scores.append(float(prediction.disagreement[mask].mean()) if mask.any() else 0.0)
    return float(np.mean(scores))
