"""Patch sampling and the augmentation families that diversify the K prompts (docs/design.md, "Diversified prompt tuning").

Prompt k is trained on family ``k mod 3``:

- 0 ``intensity``: random intensity scale, shift and gamma (contrast) — mimics scanners and phases;
- 1 ``spatial``: random flips, 90° rotations in the axial plane and a small affine warp;
- 2 ``noise``: Gaussian noise and Gaussian blur — mimics dose and reconstruction kernels.

Fine-tuning (a single model) draws the same patches per step as prompt tuning, K groups under the K families, so the
two arms compare at equal data and augmentation (docs/design.md, "Diversified prompt tuning"). The noise family adds
at most 9 HU (0.02 of the 450 HU window): no more than the weakest lesion contrast of the synthetic cohort (8 HU,
native scans), so that noise augmentation cannot erase the lesions it is meant to make robust.

Samples are dicts with ``"image"`` (1, D, H, W) float32 in [0, 1] and ``"label"`` (1, D, H, W) integer classes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)
from monai.utils import convert_to_tensor

from models.errors import ModelError

FAMILIES: tuple[str, ...] = ("intensity", "spatial", "noise")
#: Families of upstream pre-training: no flips, since left and right tell the liver from the spleen.
PRETRAIN_FAMILIES: tuple[str, ...] = ("intensity", "affine")
_KEYS = ("image", "label")

Sampler = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


def family_name(prompt: int) -> str:
    """Augmentation family of prompt ``prompt`` (cycles for K > 3)."""
    return FAMILIES[prompt % len(FAMILIES)]


def family_transforms(name: str) -> list:
    """MONAI dictionary transforms of one family (``"intensity"``, ``"spatial"`` or ``"noise"``)."""
    if name == "intensity":
        return [
            RandScaleIntensityd(keys="image", factors=0.2, prob=1.0),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=1.0),
            RandAdjustContrastd(keys="image", gamma=(0.6, 1.6), prob=1.0),
        ]
    if name == "spatial":
        return [
            RandFlipd(keys=_KEYS, spatial_axis=0, prob=0.5),
            RandFlipd(keys=_KEYS, spatial_axis=1, prob=0.5),
            RandFlipd(keys=_KEYS, spatial_axis=2, prob=0.5),
            # Axial-plane rotation keeps a patch with H == W the same shape, so items still batch.
            RandRotate90d(keys=_KEYS, prob=0.5, spatial_axes=(1, 2)),
            RandAffined(
                keys=_KEYS, prob=0.8, rotate_range=(0.25, 0.25, 0.25), scale_range=(0.15, 0.15, 0.15),
                mode=("bilinear", "nearest"), padding_mode="border",
            ),
        ]
    if name == "affine":
        return [
            RandAffined(
                keys=_KEYS, prob=0.8, rotate_range=(0.15, 0.15, 0.15), scale_range=(0.15, 0.15, 0.15),
                mode=("bilinear", "nearest"), padding_mode="border",
            ),
        ]
    if name == "noise":
        return [
            RandGaussianNoised(keys="image", prob=1.0, std=0.02),
            RandGaussianSmoothd(
                keys="image", prob=0.5, sigma_x=(0.4, 1.2), sigma_y=(0.4, 1.2), sigma_z=(0.4, 1.2)
            ),
        ]
    raise ModelError(f"unknown augmentation family {name!r}; expected one of {FAMILIES + ('affine',)}")


def make_sampler(
    roi_size: tuple[int, int, int], num_classes: int, families: list[str], seed: int,
    class_ratios: tuple[float, ...] | None = None,
) -> Sampler:
    """A callable drawing one augmented training patch from a volume.

    The patch centre is drawn class-balanced (background, organ and small tumours are equally likely
    centres, or weighted by ``class_ratios``), the volume is padded first when smaller than the patch, then
    ``families`` are applied.

    Args:
        roi_size: patch size (D, H, W); H must equal W for the spatial family's 90° rotations.
        num_classes: label classes, for class-balanced centres.
        families: augmentation families applied in order (empty = no augmentation).
        seed: random state of every random transform.
        class_ratios: relative frequency of each class as a patch centre (None: equal).

    Returns:
        ``sample(image (1,D,H,W) float32, label (1,D,H,W) int) -> (image (1,*roi), label (1,*roi))`` tensors.
    """
    if "spatial" in families and roi_size[1] != roi_size[2]:
        raise ModelError(f"the spatial family rotates in the axial plane and needs roi H == W, got {roi_size}")
    transforms = [
        SpatialPadd(keys=_KEYS, spatial_size=roi_size),
        RandCropByLabelClassesd(
            keys=_KEYS, label_key="label", spatial_size=roi_size, num_classes=num_classes, num_samples=1,
            ratios=list(class_ratios) if class_ratios else None, warn=False,
        ),
    ]
    for name in families:
        transforms += family_transforms(name)
    pipeline = Compose(transforms).set_random_state(seed=seed)

    def sample(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        (item,) = pipeline({"image": image, "label": label})
        return (
            convert_to_tensor(item["image"], dtype=torch.float32, track_meta=False),
            convert_to_tensor(item["label"], dtype=torch.long, track_meta=False),
        )

    return sample
