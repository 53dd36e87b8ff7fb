"""One loop for diversified prompt tuning and for the full fine-tuning baseline (docs/design.md, "Diversified prompt tuning").

Prompt mode: every step draws one patch (or ``batch_per_prompt`` patches) per prompt k from prompt k's
own bootstrap resample of the labelled cases (bagging), augments it with prompt k's family
(:mod:`models.augment`), and trains all K prompts in ONE batched forward pass with Dice + CE. Only the
prompts, FPUs and head are optimised (AdamW, default lr 3e-2).

Fine-tune mode (``model.mode == "finetune"``): the same loop with K = 1, the full labelled set (no
bootstrap), all augmentation families chained, and every parameter optimised (default lr 1e-3).

The model is moved to the training device (CUDA when present, with float16 autocast) and left there. Inside a
process group (:mod:`models.distributed`: one process per GPU) the same loop runs data-parallel: every rank draws
its own patches and DDP averages the gradients, so a step sees ``world_size`` times the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.losses import DiceCELoss
from tqdm import tqdm

from models.augment import family_name, make_sampler
from models.device import autocast, cpu_fast_layout, pick_device
from models.ranks import RANK_SEED_STRIDE, data_parallel, process_rank
from models.errors import ModelError
from models.cascade import CascadeConfig, label_box, locate_liver, to_working
from models.geometry import Box, Intensity, Source, affine_of, load_label, resample_to_grid
from models.inference import segment_volume
from models.slpt import SLPTNet

#: ``progress(step_done, total_steps, loss)``, called after every optimisation step.
Progress = Callable[[int, int, float], None]
#: (image, label): file paths (resampled and cropped to the liver ROI by :func:`roi_case`), or arrays already on
#: the working grid, (X, Y, Z) HU and integer classes, optionally with a third element, the backbone's
#: :class:`~models.geometry.Intensity` bound to the whole volume the arrays were cropped from (what :func:`roi_case`
#: returns; a per-volume intensity needs it).
Case = tuple[Source, Source] | tuple[np.ndarray, np.ndarray, Intensity]

DEFAULT_LR = {"prompt": 3e-2, "finetune": 1e-3}
LR_DECAYS = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Schedule of :func:`train_prompts`.

    Attributes:
        steps: optimisation steps.
        lr: AdamW learning rate; None = 3e-2 for prompts, 1e-3 for fine-tuning.
        weight_decay: AdamW weight decay.
        batch_per_prompt: patches per prompt per step (batch size = K * batch_per_prompt).
        bootstrap: give each prompt its own bootstrap resample of the cases (prompt mode only).
        class_ratios: relative frequency of each label class as a patch centre (None: equal; e.g. (1, 1, 3)
            centres three times as many patches on tumour as on liver or background).
        seed: seeds the bootstrap draws, case order and augmentations.
        device: "cpu", "cuda", …; None = CUDA when available.
        lr_decay: "constant" keeps ``lr`` throughout; "cosine" anneals it to 0 over ``steps`` (the noise of the last
            steps' updates then shrinks instead of staying at the full learning rate).
    """

    steps: int = 300
    lr: float | None = None
    weight_decay: float = 1e-4
    batch_per_prompt: int = 1
    bootstrap: bool = True
    class_ratios: tuple[float, ...] | None = None
    seed: int = 0
    device: str | None = None
    lr_decay: str = "constant"

    def __post_init__(self) -> None:
        if self.lr_decay not in LR_DECAYS:
            raise ModelError(f"unknown lr_decay {self.lr_decay!r}; expected one of {', '.join(LR_DECAYS)}")


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


def label_on_working_grid(label_source: Source, working) -> np.ndarray:
    """A label map (any grid, its own affine) resampled (nearest) onto a working-grid image: (X, Y, Z) int64."""
    label = load_label(label_source)
    on_grid = resample_to_grid(label, affine_of(label), affine_of(working), working.shape[1:], mode="nearest")
    return on_grid[0].round().to(torch.int64).numpy()


def training_box(stage1: Box, label: np.ndarray, working, margin_mm: float) -> Box:
    """Where a labelled case is trained on: stage 1's box joined with the labelled liver's box (plus the margin), so
    no labelled voxel is cut off even where stage 1 missed part of the liver. ``label`` is on ``working``'s grid."""
    labelled = label_box(label, working, margin_mm)
    return stage1 if labelled is None else stage1.union(labelled)


def roi_case(
    image_source: Source, label_source: Source, locator: torch.nn.Module, cfg: CascadeConfig = CascadeConfig()
) -> tuple[np.ndarray, np.ndarray, Intensity]:
    """A labelled image on the working grid, cropped to its liver ROI: -> (image (X, Y, Z) HU, label (X, Y, Z),
    the cascade's intensity bound to the whole working volume).

    The ROI is :func:`training_box`: stage 1's box (what inference will segment) joined with the labelled liver's.
    """
    _original, working = to_working(image_source, cfg)
    label = label_on_working_grid(label_source, working)
    box = training_box(locate_liver(locator, working, cfg).box, label, working, cfg.margin_mm)
    image = working[0].as_tensor().numpy()[box.slices()].astype(np.float32)
    return image, label[box.slices()], cfg.intensity.for_volume(working)


def load_cases(
    cases: Sequence[tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, Intensity]], num_classes: int,
    intensity: Intensity,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Normalise labelled working-grid cases in HU as the backbone expects: -> [(image (1,X,Y,Z) float32, label
    (1,X,Y,Z) int64)]. A case's own bound intensity (its third element) comes first, else ``intensity``.

    Raises:
        ModelError: no cases, image/label shape mismatch, label values outside 0..num_classes-1, or a per-volume
            ``intensity`` for a case without its volume's statistics.
    """
    if not cases:
        raise ModelError("no labelled cases to train on")
    loaded = []
    for i, (image, label, *bound) in enumerate(cases):
        normalise = bound[0] if bound else intensity
        image, label = np.asarray(image), np.asarray(label)
        if image.ndim != 3 or image.shape != label.shape:
            raise ModelError(f"case {i}: need 3D image and label of one shape, got {image.shape} and {label.shape}")
        label = np.rint(label).astype(np.int64)
        if label.min() < 0 or label.max() >= num_classes:
            raise ModelError(f"case {i}: label values {sorted(np.unique(label).tolist())} outside 0..{num_classes - 1}")
        try:
            loaded.append((normalise(image).numpy()[None], label[None]))
        except ModelError as exc:
            raise ModelError(f"case {i}: {exc}") from exc
    return loaded


def prepare_cases(model: SLPTNet, cases: Sequence[Case]) -> list[Case]:
    """Turn file-path cases into liver-ROI arrays on the model's working grid, with their volume's intensity (arrays
    pass through).

    Stage 1 uses ``model.backbone`` as it is now, i.e. before training: the frozen upstream backbone.
    """
    cfg = model.config.cascade
    return [
        tuple(case) if isinstance(case[0], np.ndarray) else roi_case(case[0], case[1], model.backbone, cfg)
        for case in cases
    ]


def train_prompts(
    model: SLPTNet, cases: Sequence[Case], cfg: TrainConfig = TrainConfig(), progress: Progress | None = None
) -> TrainResult:
    """Prompt-tune (or, for a fine-tune-mode model, fine-tune) ``model`` on labelled cases.

    Args:
        model: the network; trained in place.
        cases: (image, label) pairs — file paths (any format :mod:`models.geometry` reads), or arrays already
            on the working grid (:data:`Case`).
        cfg: schedule.
        progress: called after every step.
    """
    data = load_cases(prepare_cases(model, cases), model.config.num_classes, model.config.cascade.intensity)
    device = pick_device(cfg.device)
    cpu_fast_layout(model.to(device)).train()
    rng = np.random.default_rng(cfg.seed)
    rank = process_rank()
    # Fine-tuning draws the prompt arm's patches: K groups of batch_per_prompt, group p under family p (K from the
    # config, which a fine-tune model keeps), so the two arms compare at equal data and augmentation per step.
    k = model.config.num_prompts
    n = len(data)

    if model.mode == "prompt":
        case_indices = [
            sorted(rng.choice(n, size=n, replace=True).tolist()) if cfg.bootstrap else list(range(n)) for _ in range(k)
        ]
    else:
        case_indices = [list(range(n)) for _ in range(k)]  # no bagging: that is the prompts' diversity, not data
    families = [[family_name(p)] for p in range(k)]
    samplers = [
        make_sampler(model.config.roi_size, model.config.num_classes, families[p],
                     seed=cfg.seed * 1000 + p + RANK_SEED_STRIDE * rank, class_ratios=cfg.class_ratios)
        for p in range(k)
    ]
    prompt_index = torch.arange(k, device=device).repeat_interleave(cfg.batch_per_prompt)  # fine-tuning ignores it
    if rank:  # every rank trains the same bags (drawn above) on its own patches
        rng = np.random.default_rng([cfg.seed, rank])
    forward = data_parallel(model, device)

    optimizer, scaler, loss_fn = training_parts(model, cfg, device)
    decay = learning_rate_decay(optimizer, cfg)
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
        losses.append(training_step(forward, optimizer, scaler, loss_fn, images, labels, prompt_index))
        decay.step()
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


def learning_rate_decay(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-step learning-rate schedule ``cfg.lr_decay`` names, over ``cfg.steps`` steps."""
    if cfg.lr_decay == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)


def training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: DiceCELoss,
    images: torch.Tensor,
    labels: torch.Tensor,
    prompt_index: torch.Tensor | None,
    extra_loss: Callable[[], torch.Tensor] | None = None,
) -> float:
    """One optimisation step: forward (float16 autocast on CUDA), Dice + CE, backward, optimiser step.

    Args:
        images: (B, in_channels, *roi) on the model's device.
        labels: (B, 1, *roi) long class indices.
        prompt_index: (B,) long prompt of each item (ignored in fine-tune mode); None for a plain network that
            takes images only (the backbone during pre-training).
        extra_loss: called after the forward pass, its result is added to the loss (pre-training's denoising term,
            which reads what the forward pass left in its hook).

    Returns:
        The batch loss (reading it waits for the step to finish on the device).
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(images.device):
        logits = model(images) if prompt_index is None else model(images, prompt_index)
    loss = loss_fn(logits.float(), labels)
    if extra_loss is not None:
        loss = loss + extra_loss()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def measure_prompt_disagreement(model: SLPTNet, images: Sequence[Source], locator: torch.nn.Module | None = None) -> float:
    """Mean pairwise disagreement of the K prompts on held-out images (paths, through the cascade).

    Per volume: mean pairwise JS divergence of the K softmax maps over the ROI voxels any prompt calls
    foreground (0 when none does); then the mean over volumes.
    """
    if not images:
        raise ModelError("no volumes to measure disagreement on")
    scores = []
    for image in images:
        prediction = segment_volume(model, image, locator=locator).prediction
        mask = prediction.foreground_any
        scores.append(float(prediction.disagreement[mask].mean()) if mask.any() else 0.0)
    return float(np.mean(scores))


@contextmanager
def progress_bar(description: str) -> Iterator[Progress]:
    """A tqdm bar as a :data:`Progress` callback: ``with progress_bar("training") as report: train(..., report)``."""
    with tqdm(desc=description, unit="step") as bar:

        def report(done: int, total: int, loss: float) -> None:
            bar.total, bar.n = total, done
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.refresh()

        yield report
