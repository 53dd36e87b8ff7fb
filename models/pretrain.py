"""Upstream pre-training of the backbone on an organ-labelled cohort in MSD layout.

No pre-trained weights can be downloaded here, so the project makes its own: a stock MONAI backbone
trained with Dice + CE on the upstream cohort (``dataset.json`` with ``labels`` and ``training``;
NIfTI images in HU and organ labels), on class-balanced random patches with intensity and spatial
augmentation. The last ``val_fraction`` of the cases is held out for the Dice reported in the metrics.
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
from monai.losses import DiceCELoss
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from monai.transforms import Resize

from models.augment import make_sampler
from models.backbone import BackboneConfig, build_backbone, save_backbone
from models.device import autocast, pick_device
from models.errors import ModelError
from models.preprocess import HU_WINDOW
from models.training import Progress, load_cases


@dataclass(frozen=True)
class PretrainConfig:
    """Schedule of :func:`pretrain_backbone`.

    Attributes:
        patch_size: training patch and inference window (multiples of the down-sampling factor).
        size: resize every volume to this size first; None keeps the cohort's resolution (then the
            downstream data, at the same resolution, sees anatomy at the scale the backbone learned).
        batch_size: patches per step.
        lr: AdamW learning rate.
        val_fraction: share of cases held out for validation Dice (at least one case when > 0).
        seed: seeds patch sampling, augmentation and weight initialisation.
        device: None = CUDA when available.
        hu_window: intensity window (:func:`models.preprocess.window_hu`).
    """

    patch_size: tuple[int, int, int] = (48, 48, 48)
    size: tuple[int, int, int] | None = None
    batch_size: int = 2
    lr: float = 3e-3
    val_fraction: float = 0.2
    seed: int = 0
    device: str | None = None
    hu_window: tuple[float, float] = HU_WINDOW


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
    patch per training case.

    Returns:
        metrics: ``val_dice`` {class name: Dice}, ``val_mean_dice``, ``final_loss``, ``train_time_s``,
        ``epochs``, ``steps``, ``num_train``, ``num_val``, ``labels``, ``patch_size``, ``size``,
        ``hu_window``, ``device`` (also written into the JSON).
    """
    labels, pairs = read_msd_dataset(data_dir)
    cfg = replace(cfg, out_channels=len(labels))
    data = load_cases(pairs, len(labels), schedule.hu_window)
    if schedule.size is not None:
        data = [_resize(image, label, schedule.size) for image, label in data]
    num_val = min(len(data) - 1, math.ceil(len(data) * schedule.val_fraction)) if schedule.val_fraction > 0 else 0
    train, val = data[: len(data) - num_val], data[len(data) - num_val:]

    torch.manual_seed(schedule.seed)
    device = pick_device(schedule.device)
    model = build_backbone(cfg).to(device).train()
    sampler = make_sampler(schedule.patch_size, len(labels), ["intensity", "spatial"], seed=schedule.seed)
    rng = np.random.default_rng(schedule.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    steps = epochs * math.ceil(len(train) / schedule.batch_size)
    loss_value = float("nan")
    start = time.perf_counter()
    for step in range(steps):
        patches = [sampler(*train[i]) for i in rng.integers(len(train), size=schedule.batch_size)]
        images = torch.stack([p[0] for p in patches]).to(device)
        targets = torch.stack([p[1] for p in patches]).to(device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            logits = model(images)
        loss = loss_fn(logits.float(), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_value = float(loss.detach())
        if progress:
            progress(step + 1, steps, loss_value)
    train_time = time.perf_counter() - start

    model.eval()
    val_dice = (
        _validation_dice(model, val, schedule.patch_size, len(labels), device)
        if val
        else np.full(len(labels) - 1, np.nan)
    )
    metrics = {
        "val_dice": {labels[c]: float(val_dice[c - 1]) for c in range(1, len(labels))},
        "val_mean_dice": float(np.nanmean(val_dice)) if val else float("nan"),
        "final_loss": loss_value,
        "train_time_s": train_time,
        "epochs": epochs,
        "steps": steps,
        "num_train": len(train),
        "num_val": len(val),
        "labels": {str(k): v for k, v in labels.items()},
        "patch_size": list(schedule.patch_size),
        "size": None if schedule.size is None else list(schedule.size),
        "hu_window": list(schedule.hu_window),
        "device": str(device),
    }
    save_backbone(model.cpu(), cfg, out, metrics)
    return metrics


def _resize(image: np.ndarray, label: np.ndarray, size: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize (1, D, H, W) image (trilinear) and label (nearest) to ``size``."""
    resized_image = np.asarray(Resize(spatial_size=size, mode="trilinear")(image), dtype=np.float32)
    resized_label = np.asarray(Resize(spatial_size=size, mode="nearest")(label.astype(np.float32))).astype(np.int64)
    return resized_image, resized_label


def _validation_dice(
    model: torch.nn.Module, cases: list[tuple[np.ndarray, np.ndarray]], roi: tuple[int, int, int],
    num_classes: int, device: torch.device,
) -> np.ndarray:
    """Mean Dice per foreground class over whole validation volumes: -> (num_classes - 1,), NaN if absent."""
    scores = []
    with torch.no_grad():
        for image, label in cases:
            x = torch.from_numpy(image)[None].to(device)
            with autocast(device):
                logits = sliding_window_inference(x, roi_size=roi, sw_batch_size=2, predictor=model, overlap=0.25)
            pred = one_hot(torch.as_tensor(logits).float().argmax(dim=1, keepdim=True).cpu(), num_classes)
            truth = one_hot(torch.from_numpy(label)[None], num_classes)
            scores.append(compute_dice(pred, truth, include_background=False, ignore_empty=True)[0].numpy())
    return np.nanmean(np.stack(scores), axis=0)
