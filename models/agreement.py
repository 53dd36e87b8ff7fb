"""How much two label maps of one volume agree: Dice, 95th-percentile Hausdorff distance and lesion-level F1, and the
voxel-wise majority of several (docs/design.md, "Review, double reading and agreement").

Label maps hold 0 (background), 1 (liver) and 2 (tumour). "Liver" is the organ, tumour included (values > 0);
"tumour" is value 2; a lesion is a connected tumour component (26-connectivity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

from models.quality import TUMOUR, detection_f1, lesion_matches, mask_dice


def hd95(first: np.ndarray, second: np.ndarray, spacing: Sequence[float]) -> float | None:
    """The symmetric 95th-percentile Hausdorff distance (mm) between two masks (MONAI's); 0.0 when both are empty,
    None when only one is (no surface to measure from)."""
    if not first.any() and not second.any():
        return 0.0
    if not first.any() or not second.any():
        return None
    as_batch = [torch.from_numpy(np.stack([~mask, mask])[None]) for mask in (first, second)]
    distance = compute_hausdorff_distance(*as_batch, percentile=95, spacing=list(spacing))
    return float(distance.item())


def lesion_f1(first: np.ndarray, second: np.ndarray) -> float:
    """Lesion-level F1 of ``second``'s tumour against ``first``'s: a lesion of ``first`` is found when a lesion of
    ``second`` touches it; a lesion of ``second`` that touches none is a false one. 1.0 when neither has a lesion."""
    f1 = detection_f1(*lesion_matches(second, first))
    return 1.0 if f1 is None else f1


def agreement(first: np.ndarray, second: np.ndarray, spacing: Sequence[float]) -> dict[str, float | None]:
    """Liver and tumour Dice, HD95 (mm) and lesion F1 between two label maps on one grid."""
    if first.shape != second.shape:
        raise ValueError(f"label maps differ in shape: {first.shape} vs {second.shape}")
    liver = (first > 0, second > 0)
    tumour = (first == TUMOUR, second == TUMOUR)
    return {
        "liver_dice": mask_dice(*liver),
        "tumour_dice": mask_dice(*tumour),
        "liver_hd95": hd95(*liver, spacing),
        "tumour_hd95": hd95(*tumour, spacing),
        "lesion_f1": lesion_f1(*tumour),
    }


def majority(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel-wise majority: each voxel takes the value more than half of the maps give it, else background."""
    if len(maps) < 2:
        raise ValueError("a majority needs at least two label maps")
    stacked = np.stack(maps)
    result = np.zeros(stacked.shape[1:], dtype=stacked.dtype)
    for value in np.unique(stacked):
        if value != 0:
            result[(stacked == value).sum(axis=0) * 2 > len(maps)] = value
    return result
