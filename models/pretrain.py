"""Upstream pre-training of the backbone on an organ-labelled cohort in MSD layout.

No pre-trained weights can be downloaded here, so the project makes its own: a stock MONAI backbone
trained with Dice + CE on the upstream cohort (``dataset.json`` with ``labels`` and ``training``;
images in HU and organ labels, any format :mod:`models.geometry` reads), on class-balanced random patches with
intensity and small affine augmentation (no flips: left and right tell the liver from the spleen). Every case is resampled to the working spacing *and* to the cascade's coarse
spacing, and patches are drawn from both: the backbone serves stage 1 of the cascade (finding the liver on the
coarse grid) and gives stage 2 its frozen features at the working spacing. The last ``val_fraction`` of the cases
is held out for the Dice reported in the metrics, at both spacings.
The checkpoint is a plain state dict with its JSON beside it (:func:`models.backbone.save_backbone`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceLoss
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional as F

from models.adapters import adapt_backbone
from models.augment import PRETRAIN_FAMILIES, make_sampler
from models.backbone import BackboneConfig, build_backbone, save_backbone
from models.device import autocast, pick_device
from models.errors import ModelError
from models.geometry import COARSE_SPACING, HU_WINDOW, WORKING_SPACING, Intensity, load_image, to_spacing
from models.training import Progress, label_on_working_grid, load_cases, training_step


@dataclass(frozen=True)
class PretrainConfig:
    """Schedule of :func:`pretrain_backbone`.

    Attributes:
        patch_size: training patch and inference window (multiples of the down-sampling factor).
        spacing: working spacing (mm), that of the downstream model's stage 2.
        coarse_spacing: stage 1's spacing (mm); None trains at the working spacing only.
        batch_size: patches per step.
        lr: AdamW learning rate.
        val_fraction: share of cases held out for validation Dice (at least one case when > 0).
        seed: seeds patch sampling, augmentation and weight initialisation.
        device: None = CUDA when available.
        hu_window: intensity window (:func:`models.geometry.window_hu`).
        denoise_weight: weight of the self-supervised denoising term (0 = organ loss only; see
            :class:`DenoisingHead`).
        denoise_sigma: largest standard deviation of the noise added for that term (windowed units, per patch
            drawn uniformly in [0, sigma]).
        class_ratios: relative frequency of each class as a patch centre (None: equal). Small, rare classes (the
            upstream lesion class) learn faster when they centre more patches.
        class_weights: weight of each class in the cross-entropy term (None: equal); see :class:`PretrainLoss`.
        dice_background: whether the Dice term counts the background class.
    """

    patch_size: tuple[int, int, int] = (48, 48, 48)
    spacing: tuple[float, float, float] = WORKING_SPACING
    coarse_spacing: tuple[float, float, float] | None = COARSE_SPACING
    batch_size: int = 2
    lr: float = 3e-3
    val_fraction: float = 0.2
    seed: int = 0
    device: str | None = None
    hu_window: tuple[float, float] = HU_WINDOW
    denoise_weight: float = 0.0
    denoise_sigma: float = 0.1
    class_ratios: tuple[float, ...] | None = None
    class_weights: tuple[float, ...] | None = None
    dice_background: bool = True


class PretrainLoss(nn.Module):
    """Dice + cross-entropy of the upstream classes: (B, C, *roi) logits against (B, 1, *roi) class indices.

    With equal weights and background counted this is MONAI's ``DiceCELoss(batch=True)``, the recipe's loss. The
    upstream lesion class is under 0.01 % of voxels, and a hypodense spot looks like the fluid and soft tissue the
    background holds; with equal weights the background absorbs it (docs/results/simulation/dev_sweep.md, "Larger
    upstream lesions"). ``class_weights`` up-weights a class's voxels in the cross-entropy; dropping background from
    the Dice term stops its near-perfect overlap from setting the pace. The Dice term stays unweighted: over a batch
    without a lesion, a weighted lesion Dice would push every lesion probability to zero.
    """

    def __init__(self, class_weights: tuple[float, ...] | None = None, dice_background: bool = True) -> None:
        super().__init__()
        # Batch Dice: a class absent from one patch does not make that patch's loss jump (see models.training).
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, batch=True, include_background=dice_background)
        self.register_buffer("weight", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, labels) + F.cross_entropy(logits, labels[:, 0].long(), weight=self.weight)


class DenoisingHead(nn.Module):
    """Self-supervised auxiliary of pre-training: the image, predicted from the decoder feature of a noised input.

    The organ task labels a lesion as the organ around it, so it teaches the frozen features to ignore lesions;
    downstream prompt tuning then has little to find tumours with. Predicting the patch as stored from a copy
    with extra noise added (Noise2Noise: no clean image is needed) makes the decoder feature carry a denoised
    intensity map, lesions included. The head is a 1×1×1 convolution on the
    feature the downstream head reads (:mod:`models.adapters`), compared at that feature's resolution with the
    average-pooled image; it is dropped after pre-training, so the checkpoint stays a plain backbone.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        adapter = adapt_backbone(backbone)
        self.conv = nn.Conv3d(adapter.head_channels - adapter.head_logit_channels, 1, kernel_size=1)
        self._feature: torch.Tensor | None = None
        self._hook = adapter.head_source.register_forward_pre_hook(self._keep_feature)

    def _keep_feature(self, _module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._feature = args[0]

    def loss(self, image: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the backbone's last forward pass, read through this head, against ``image``
        (B, 1, *S) average-pooled to the feature's grid."""
        feature, self._feature = self._feature, None
        if feature is None:
            raise ModelError("DenoisingHead.loss needs a forward pass of the backbone first")
        target = F.adaptive_avg_pool3d(image, feature.shape[2:])
        return F.mse_loss(self.conv(feature.float()), target)

    def remove(self) -> None:
        self._hook.remove()


def read_msd_dataset(data_dir: str | Path) -> tuple[dict[int, str], list[tuple[Path, Path]]]:
    """Read an MSD ``dataset.json``: -> ({class index: name}, [(image path, label path)]).

    Raises:
        ModelError: missing/invalid ``dataset.json``, non-contiguous label indices, missing files.
    """
    data_dir = Path(data_dir)
    meta = data_dir / "dataset.json"
    if not meta.is_file():
        raise ModelError(f"no dataset.json in {data_dir}")
    try:
        description = json.loads(meta.read_text())
        labels = {int(k): str(v) for k, v in description["labels"].items()}
        pairs = [(data_dir / item["image"], data_dir / item["label"]) for item in description["training"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(
            f"invalid {meta}: needs 'labels' {{index: name}} and 'training' [{{image, label}}] ({exc!r})"
        ) from exc
    if sorted(labels) != list(range(len(labels))) or len(labels) < 2:
        raise ModelError(f"{meta}: labels must be indices 0..N-1 with N >= 2, got {sorted(labels)}")
    if not pairs:
        raise ModelError(f"{meta}: 'training' is empty")
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise ModelError(f"{meta}: {len(missing)} listed files are missing, e.g. {missing[0]}")
    return labels, pairs


def pretrain_backbone(
    data_dir: str | Path,
    out: str | Path,
    cfg: BackboneConfig = BackboneConfig(),
    epochs: int = 30,
    progress: Progress | None = None,
    schedule: PretrainConfig = PretrainConfig(),
) -> dict[str, Any]:
    """Train a backbone on the upstream cohort in ``data_dir`` and save it to ``out`` (+ ``out.json``).

    ``cfg.out_channels`` is taken from the number of classes in ``dataset.json``. One epoch draws one
    patch per training case (and grid).

    Returns:
        metrics: ``val_dice`` {class name: Dice} at the working spacing, ``val_dice_coarse`` at the coarse one,
        ``val_auc_near`` {class name: AUC of its probability against the voxels around it} at the working spacing,
        ``val_mean_dice``, ``final_loss``, ``train_time_s``, ``epochs``, ``steps``, ``num_train``, ``num_val``,
        ``labels``, ``patch_size``, ``spacing``, ``coarse_spacing``, ``hu_window``, ``device`` (also written into
        the JSON).
    """
    labels, pairs = read_msd_dataset(data_dir)
    cfg = replace(cfg, out_channels=len(labels))
    grids = [schedule.spacing] + ([schedule.coarse_spacing] if schedule.coarse_spacing else [])
    per_grid = [load_cases(resample_cases(pairs, spacing), len(labels), Intensity(schedule.hu_window)) for spacing in grids]
    num_val = min(len(pairs) - 1, math.ceil(len(pairs) * schedule.val_fraction)) if schedule.val_fraction > 0 else 0
    train = [case for data in per_grid for case in data[: len(pairs) - num_val]]
    val = [data[len(pairs) - num_val:] for data in per_grid]

    torch.manual_seed(schedule.seed)
    device = pick_device(schedule.device)
    model = build_backbone(cfg).to(device).train()
    for name in ("class_ratios", "class_weights"):
        given = getattr(schedule, name)
        if given is not None and len(given) != len(labels):
            raise ModelError(f"{name} has {len(given)} entries for {len(labels)} classes")
    sampler = make_sampler(
        schedule.patch_size, len(labels), list(PRETRAIN_FAMILIES), seed=schedule.seed, class_ratios=schedule.class_ratios
    )
    rng = np.random.default_rng(schedule.seed)
    denoiser = DenoisingHead(model).to(device) if schedule.denoise_weight > 0 else None
    parameters = list(model.parameters()) + (list(denoiser.parameters()) if denoiser else [])
    optimizer = torch.optim.AdamW(parameters, lr=schedule.lr, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    loss_fn = PretrainLoss(schedule.class_weights, schedule.dice_background).to(device)
    steps = epochs * math.ceil(len(train) / schedule.batch_size)
    loss_value = float("nan")
    start = time.perf_counter()
    for step in range(steps):
        patches = [sampler(*train[i]) for i in rng.integers(len(train), size=schedule.batch_size)]
        images = torch.stack([p[0] for p in patches]).to(device)
        targets = torch.stack([p[1] for p in patches]).to(device)
        if denoiser is None:
            loss_value = training_step(model, optimizer, scaler, loss_fn, images, targets, prompt_index=None)
        else:
            # The organ term sees the noised copy too (noise augmentation), so the step stays one forward pass.
            sigma = torch.rand(len(images), 1, 1, 1, 1, device=device) * schedule.denoise_sigma
            loss_value = training_step(
                model, optimizer, scaler, loss_fn, images + sigma * torch.randn_like(images), targets,
                prompt_index=None, extra_loss=lambda: schedule.denoise_weight * denoiser.loss(images),
            )
        if progress:
            progress(step + 1, steps, loss_value)
    train_time = time.perf_counter() - start
    if denoiser:
        denoiser.remove()

    model.eval()
    absent = np.full(len(labels) - 1, np.nan)
    val_dice, val_auc = zip(*[
        _validation_scores(model, cases, schedule.patch_size, len(labels), device) if cases else (absent, absent)
        for cases in val
    ])
    metrics = {
        "val_dice": {labels[c]: float(val_dice[0][c - 1]) for c in range(1, len(labels))},
        "val_dice_coarse": (
            {labels[c]: float(val_dice[1][c - 1]) for c in range(1, len(labels))} if len(val_dice) > 1 else None
        ),
        "val_auc_near": {labels[c]: float(val_auc[0][c - 1]) for c in range(1, len(labels))},
        "val_mean_dice": float(np.nanmean(val_dice[0])) if num_val else float("nan"),
        "final_loss": loss_value,
        "train_time_s": train_time,
        "epochs": epochs,
        "steps": steps,
        "num_train": len(pairs) - num_val,
        "num_val": num_val,
        "labels": {str(k): v for k, v in labels.items()},
        "patch_size": list(schedule.patch_size),
        "spacing": list(schedule.spacing),
        "coarse_spacing": None if schedule.coarse_spacing is None else list(schedule.coarse_spacing),
        "hu_window": list(schedule.hu_window),
        "device": str(device),
        "denoise_weight": schedule.denoise_weight,
        "denoise_sigma": schedule.denoise_sigma,
        "class_ratios": None if schedule.class_ratios is None else list(schedule.class_ratios),
        "class_weights": None if schedule.class_weights is None else list(schedule.class_weights),
        "dice_background": schedule.dice_background,
        "batch_size": schedule.batch_size,
    }
    save_backbone(model.cpu(), cfg, out, metrics)
    return metrics


def resample_cases(pairs: list[tuple[Path, Path]], spacing: tuple[float, float, float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, label) files -> [(image (X, Y, Z) HU, label (X, Y, Z) int64)] in RAS at ``spacing`` mm."""
    out = []
    for image_path, label_path in pairs:
        grid = to_spacing(load_image(image_path), spacing)
        out.append((grid[0].as_tensor().numpy(), label_on_working_grid(label_path, grid)))
    return out


#: How far (voxels) around a class's voxels :func:`_validation_scores` looks for the voxels it must be told from.
NEAR_VOXELS = 4


def _validation_scores(
    model: torch.nn.Module, cases: list[tuple[np.ndarray, np.ndarray]], roi: tuple[int, int, int],
    num_classes: int, device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Per foreground class over whole validation volumes, each (num_classes - 1,), NaN where absent:

    - the mean Dice of the argmax;
    - the mean AUC of the class's probability between its voxels and the other voxels within :data:`NEAR_VOXELS` of
      them. A rare class inside another (a lesion in its organ) can be ranked right while never winning the argmax,
      and can win it on training cases only; this says whether held-out voxels are told from their surroundings
      (docs/results/simulation/dev_sweep.md, "Larger upstream lesions").
    """
    dice_scores, auc_scores = [], []
    with torch.no_grad():
        for image, label in cases:
            x = torch.from_numpy(image)[None].to(device)
            with autocast(device):
                logits = sliding_window_inference(x, roi_size=roi, sw_batch_size=2, predictor=model, overlap=0.25)
            logits = torch.as_tensor(logits).float().cpu()
            pred = one_hot(logits.argmax(dim=1, keepdim=True), num_classes)
            truth = one_hot(torch.from_numpy(label)[None], num_classes)
            dice_scores.append(compute_dice(pred, truth, include_background=False, ignore_empty=True)[0].numpy())
            probabilities = torch.softmax(logits, dim=1)[0].numpy()
            auc_scores.append([_near_auc(probabilities[c], label[0] == c) for c in range(1, num_classes)])
    return np.nanmean(np.stack(dice_scores), axis=0), np.nanmean(np.array(auc_scores, dtype=float), axis=0)


def _near_auc(probability: np.ndarray, mask: np.ndarray) -> float:
    """AUC of ``probability`` between ``mask``'s voxels and those within :data:`NEAR_VOXELS` around it (NaN if either
    is empty)."""
    near = ndimage.binary_dilation(mask, iterations=NEAR_VOXELS) & ~mask
    if not mask.any() or not near.any():
        return float("nan")
    scores = np.concatenate([probability[mask], probability[near]])
    return float(roc_auc_score(np.r_[np.ones(int(mask.sum())), np.zeros(int(near.sum()))], scores))
