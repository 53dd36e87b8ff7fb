"""Stage 1 of the liver-ROI cascade: where is the liver? (see docs/design.md, "Geometry and the liver-ROI cascade").

The frozen backbone's upstream output on a coarse resample of the whole volume (default 5 mm) gives a liver mask;
its largest connected component, grown by a margin, is the region of interest (ROI) on the working grid in which
the prompt-tuned model segments liver and tumour. The same forward pass gives the volume's embedding
(:mod:`models.embedding`), so ingestion pays for one coarse pass per volume.

If the backbone finds no liver (fewer than ``min_liver_ml`` millilitres), the ROI is the whole volume and
``LiverROI.found`` is False: inference still answers, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from scipy import ndimage
from torch import nn

from models.adapters import adapt_backbone, first_conv
from models.config import config_from_dict, config_to_dict
from models.errors import ModelError
from models.geometry import (
    COARSE_SPACING,
    HU_WINDOW,
    WORKING_SPACING,
    Box,
    Intensity,
    IntensityScheme,
    Source,
    affine_of,
    box_on_grid,
    load_image,
    to_spacing,
)

#: Largest coarse window (voxels per axis) run in one pass; bigger volumes are covered by sliding windows.
MAX_COARSE_WINDOW = 128


@dataclass(frozen=True)
class CascadeConfig:
    """Geometry of the cascade.

    Attributes:
        spacing: working spacing (mm) of stage 2, training and scoring.
        coarse_spacing: spacing (mm) at which stage 1 looks for the liver.
        margin_mm: the ROI is the liver's bounding box grown by this much on every side.
        liver_class: upstream class index of the liver.
        min_liver_ml: a predicted liver smaller than this counts as "no liver found".
        hu_window: the HU window network inputs are clipped to (None for the "volume" scheme, which clips nothing).
        normalization, norm_mean, norm_std, norm_nonzero, norm_rescale: what then becomes of the HU
            (:class:`models.geometry.Intensity`: "window" scales the window to [0, 1]; "zscore" is
            ``(hu - norm_mean) / norm_std``, nnU-Net's ``CTNormalization``; "volume" z-scores by each volume's own
            statistics, of its nonzero voxels where ``norm_nonzero``, then rescales it to ``norm_rescale``, a MONAI
            bundle's ``NormalizeIntensityd`` + ``ScaleIntensityd``). Together with ``hu_window`` a property of the
            backbone (:meth:`intensity`).
    """

    spacing: tuple[float, float, float] = WORKING_SPACING
    coarse_spacing: tuple[float, float, float] = COARSE_SPACING
    margin_mm: float = 15.0
    liver_class: int = 1
    min_liver_ml: float = 50.0
    hu_window: tuple[float, float] | None = HU_WINDOW
    normalization: IntensityScheme = "window"
    norm_mean: float = 0.0
    norm_std: float = 1.0
    norm_nonzero: bool = False
    norm_rescale: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        for name in ("spacing", "coarse_spacing", "hu_window", "norm_rescale"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if min(self.spacing) <= 0 or min(self.coarse_spacing) <= 0 or self.margin_mm < 0:
            raise ModelError(f"spacings must be positive and the margin >= 0, got {self}")
        self.intensity  # validated now, not at the first volume

    @property
    def intensity(self) -> Intensity:
        """HU -> network input, as the backbone was pre-trained (a "volume" one is bound to each volume with
        :meth:`~models.geometry.Intensity.for_volume` where the whole volume is loaded)."""
        return Intensity(self.hu_window, self.normalization, self.norm_mean, self.norm_std, self.norm_nonzero,
                         self.norm_rescale)

    @staticmethod
    def intensity_fields(intensity: Intensity) -> dict:
        """The keyword arguments of this config that hold ``intensity``."""
        return {"hu_window": intensity.window, "normalization": intensity.scheme, "norm_mean": intensity.mean,
                "norm_std": intensity.std, "norm_nonzero": intensity.nonzero, "norm_rescale": intensity.rescale}

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CascadeConfig:
        return config_from_dict(cls, data, "cascade")


@dataclass(frozen=True)
class LiverROI:
    """The stage-1 result on the working grid: ``box`` to segment in, ``found`` False when it fell back to the
    whole volume, ``liver_ml`` the volume of the liver stage 1 saw."""

    box: Box
    found: bool
    liver_ml: float


@dataclass
class CoarsePass:
    """One forward pass of the backbone over the coarse volume.

    Attributes:
        coarse_hu: (X, Y, Z) float32 HU on the coarse grid; affine: its (4, 4) RAS affine.
        organ: (X, Y, Z) bool, voxels whose upstream argmax is the liver (largest component only).
        stage_stats: per encoder stage, (C,) means and (C,) standard deviations of the output of its first
            convolution (for the embedding), when asked for.
    """

    coarse_hu: np.ndarray
    affine: np.ndarray
    organ: np.ndarray
    stage_stats: list[torch.Tensor]


def to_working(source: Source, cfg: CascadeConfig = CascadeConfig()) -> tuple[MetaTensor, MetaTensor]:
    """(original (1, *orig) HU, working (1, *work) HU in RAS at ``cfg.spacing``) of an image."""
    original = load_image(source)
    return original, to_spacing(original, cfg.spacing)


def coarse_pass(backbone: nn.Module, working: MetaTensor, cfg: CascadeConfig = CascadeConfig(),
                collect_stats: bool = False) -> CoarsePass:
    """Run the frozen backbone once over the whole volume at ``cfg.coarse_spacing`` (see :class:`CoarsePass`)."""
    coarse = to_spacing(working, cfg.coarse_spacing)
    adapter = adapt_backbone(backbone)
    window = tuple(min(MAX_COARSE_WINDOW, math.ceil(s / adapter.size_divisor) * adapter.size_divisor)
                   for s in coarse.shape[1:])
    device = next(backbone.parameters()).device
    # A per-volume normalisation takes the statistics of the working-grid volume (the bundle's own spacing), not of
    # this coarser copy: stage 1 then sees the bundle's normalised image, resampled (docs/design.md).
    x = cfg.intensity.for_volume(working)(coarse.as_tensor())[None].to(device)
    stats: list[torch.Tensor] = []

    def channel_stats(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        flat = output.float().flatten(2)[0]  # (C, voxels) of one window
        stats.extend([flat.mean(dim=1).cpu(), flat.std(dim=1).cpu()])

    handles = ([first_conv(stage).register_forward_hook(channel_stats) for stage in adapter.stages]
               if collect_stats else [])
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            logits = sliding_window_inference(x, roi_size=window, sw_batch_size=1, predictor=backbone, overlap=0.25)
    finally:
        for handle in handles:
            handle.remove()
        backbone.train(was_training)
    if collect_stats and len(stats) > 2 * len(adapter.stages):
        # Several windows: average each stage's statistics over them (stats come in window-major order).
        per_window = torch.stack([torch.cat(stats[i:i + 2 * len(adapter.stages)])
                                  for i in range(0, len(stats), 2 * len(adapter.stages))])
        stats = [per_window.mean(dim=0)]
    organ = (torch.as_tensor(logits).argmax(dim=1)[0] == cfg.liver_class).cpu().numpy()
    return CoarsePass(
        coarse_hu=coarse[0].as_tensor().numpy().astype(np.float32), affine=affine_of(coarse),
        organ=largest_component(organ), stage_stats=stats,
    )


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask (empty stays empty)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum_labels(mask, labels, index=range(1, count + 1))
    return labels == 1 + int(np.argmax(sizes))


def roi_from_pass(result: CoarsePass, working: MetaTensor, cfg: CascadeConfig = CascadeConfig()) -> LiverROI:
    """The working-grid ROI around the liver that ``result`` found, or the whole volume when it found none."""
    voxel_ml = float(abs(np.linalg.det(result.affine[:3, :3]))) / 1000.0
    liver_ml = float(result.organ.sum()) * voxel_ml
    liver_box = Box.of_mask(result.organ)
    if liver_box is None or liver_ml < cfg.min_liver_ml:
        return LiverROI(Box.whole(working.shape), found=False, liver_ml=liver_ml)
    box = box_on_grid(liver_box, result.affine, affine_of(working), working.shape, margin_mm=cfg.margin_mm)
    return LiverROI(box, found=True, liver_ml=liver_ml)


def locate_liver(backbone: nn.Module, working: MetaTensor, cfg: CascadeConfig = CascadeConfig()) -> LiverROI:
    """Stage 1: the liver ROI of a working-grid volume (1, X, Y, Z) in HU."""
    return roi_from_pass(coarse_pass(backbone, working, cfg), working, cfg)


def label_box(label: np.ndarray, working: MetaTensor, margin_mm: float, classes_from: int = 1) -> Box | None:
    """The box around a working-grid label's foreground (values >= ``classes_from``) plus a margin; None if empty.

    Args:
        label: (X, Y, Z) classes on the grid of ``working`` (1, X, Y, Z).
    """
    box = Box.of_mask(np.asarray(label) >= classes_from)
    if box is None:
        return None
    affine = affine_of(working)
    return box_on_grid(box, affine, affine, working.shape, margin_mm=margin_mm)
