"""Prediction with the K prompts: stage 2 of the liver-ROI cascade, and the way back to the image's grid.

:func:`segment_volume` is what the server runs for an image file: the volume goes to the working grid
(:mod:`models.geometry`), stage 1 finds the liver ROI (:mod:`models.cascade`), and the prompt-tuned model segments
that ROI with MONAI's ``sliding_window_inference`` at the model's ``roi_size``, each window running the K prompts
in one batched pass; :class:`VolumePrediction` maps the result back onto the image's own grid (shape and affine).
:func:`predict` segments a volume that is already on the working grid (the simulator's cached ROIs). The prediction is the mean of the K softmax maps; the
voxel-wise disagreement is the mean pairwise Jensen–Shannon divergence between the K maps (natural log,
in [0, ln 2]); it is zero for a fine-tuned model (K = 1).
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from torch import nn

from models.cascade import LiverROI, locate_liver, to_working
from models.device import autocast, window_batch
from models.errors import ModelError
from models.geometry import Box, Intensity, Source, affine_of, map_to_grid
from models.slpt import SLPTNet
from strategies.uncertainty import any_prompt_foreground, mean_pairwise_js_divergence

VolumeOnGrid = np.ndarray | torch.Tensor

@dataclass
class Prediction:
    """Result of :func:`predict` for a volume of shape (X, Y, Z).

    Attributes:
        mean_prob: (C, X, Y, Z) float32, mean of the K prompts' softmax maps.
        label: (X, Y, Z) uint8, argmax of ``mean_prob``.
        disagreement: (X, Y, Z) float32, mean pairwise JS divergence of the K softmax maps.
        foreground_any: (X, Y, Z) bool, voxels that at least one prompt labels non-background (the
            region over which TESLA averages uncertainty).
    """

    mean_prob: np.ndarray
    label: np.ndarray
    disagreement: np.ndarray
    foreground_any: np.ndarray


def prompt_probabilities(
    model: SLPTNet,
    image_hu: VolumeOnGrid,
    overlap: float = 0.25,
    sw_batch_size: int | None = None,
    roi_size: tuple[int, int, int] | None = None,
    intensity: Intensity | None = None,
) -> torch.Tensor:
    """Softmax maps of every prompt: volume (X, Y, Z) in HU on the working grid -> (K, C, X, Y, Z) float32 (CPU).

    ``roi_size`` is the sliding window (default: the model's training ``roi_size``); a window as large as
    the volume runs it in one pass, which is faster than several overlapping patches. ``sw_batch_size`` windows
    run in one forward pass (default :func:`~models.device.window_batch`: several on a GPU, one on the CPU).
    ``intensity``: HU -> network input, bound to the whole volume that ``image_hu`` is a crop of
    (:meth:`~models.geometry.Intensity.for_volume`); default the model's, which a per-volume scheme refuses to apply
    unbound (a crop's statistics are not its volume's).
    """
    volume = (intensity or model.config.cascade.intensity)(image_hu)
    if volume.ndim != 3:
        raise ModelError(f"expected a 3D volume on the working grid, got shape {tuple(volume.shape)}")
    device = next(model.parameters()).device
    k, c = model.num_prompts, model.config.num_classes

    def all_prompts(windows: torch.Tensor) -> torch.Tensor:
        # (n, 1, *roi) -> (n, K*C, *roi): prompts stacked along channels so the windows blend per prompt.
        with autocast(device):
            logits = model.forward_all(windows)
        probs = torch.softmax(logits.float(), dim=2)
        return probs.transpose(0, 1).reshape(windows.shape[0], k * c, *windows.shape[2:])

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = volume[None, None].to(device)
            blended = sliding_window_inference(
                x, roi_size=roi_size or model.config.roi_size, sw_batch_size=sw_batch_size or window_batch(device),
                predictor=all_prompts,
                overlap=overlap, mode="gaussian",
            )
    finally:
        model.train(was_training)
    return torch.as_tensor(blended).reshape(k, c, *volume.shape).float().cpu()


def pairwise_js_divergence(probs: torch.Tensor) -> torch.Tensor:
    """Mean pairwise Jensen–Shannon divergence: (K, C, *S) -> (*S) float32; zeros when K = 1.

    The one definition lives in :func:`strategies.uncertainty.mean_pairwise_js_divergence` (scores and maps
    must agree); this wraps it for tensors.
    """
    if probs.shape[0] < 2:
        return torch.zeros(probs.shape[2:], dtype=torch.float32)
    return torch.from_numpy(mean_pairwise_js_divergence(probs.numpy()).astype(np.float32))


def predict(
    model: SLPTNet,
    image_hu: VolumeOnGrid,
    overlap: float = 0.25,
    sw_batch_size: int | None = None,
    roi_size: tuple[int, int, int] | None = None,
    intensity: Intensity | None = None,
) -> Prediction:
    """Segment one CT volume (X, Y, Z) in HU that is already on the working grid, with all K prompts.

    See :func:`prompt_probabilities` for the sliding-window and ``intensity`` arguments.
    """
    probs = prompt_probabilities(model, image_hu, overlap=overlap, sw_batch_size=sw_batch_size, roi_size=roi_size,
                                 intensity=intensity)
    mean_prob = probs.mean(dim=0)
    return Prediction(
        mean_prob=mean_prob.numpy().astype(np.float32),
        label=mean_prob.argmax(dim=0).numpy().astype(np.uint8),
        disagreement=pairwise_js_divergence(probs).numpy().astype(np.float32),
        foreground_any=any_prompt_foreground(probs.numpy()),
    )


@dataclass
class VolumePrediction:
    """:func:`segment_volume`'s result: the ROI prediction and where it lies.

    Attributes:
        prediction: on the ROI of the working grid, shapes (C, *roi) / (*roi).
        roi: the stage-1 region (``roi.found`` False: no liver found, the whole volume was segmented).
        roi_affine: (4, 4) RAS affine of the ROI's voxels.
        original_affine, original_shape: the image's own grid.
    """

    prediction: Prediction
    roi: LiverROI
    roi_affine: np.ndarray
    original_affine: np.ndarray
    original_shape: tuple[int, int, int]

    def label_on_original(self) -> np.ndarray:
        """(*original_shape) uint8 label map on the image's grid: argmax of the mean probabilities resampled
        (trilinear) there; background outside the ROI."""
        probs, box = map_to_grid(torch.from_numpy(self.prediction.mean_prob), self.roi_affine,
                                 self.original_affine, self.original_shape)
        label = np.zeros(self.original_shape, dtype=np.uint8)
        label[box.slices()] = probs.argmax(dim=0).numpy().astype(np.uint8)
        return label

    def disagreement_on_original(self) -> np.ndarray:
        """(*original_shape) float32 disagreement on the image's grid; 0 outside the ROI."""
        values, box = map_to_grid(torch.from_numpy(self.prediction.disagreement)[None], self.roi_affine,
                                  self.original_affine, self.original_shape)
        out = np.zeros(self.original_shape, dtype=np.float32)
        out[box.slices()] = values[0].numpy()
        return out


def roi_of(model: SLPTNet, working: MetaTensor, locator: nn.Module | None, whole_volume: bool = False) -> LiverROI:
    """Stage 1 for ``model``: the liver ROI found by ``locator`` (default: the model's own frozen backbone)."""
    if whole_volume:
        return LiverROI(Box.whole(working.shape), found=False, liver_ml=0.0)
    if locator is None:
        if model.mode != "prompt":
            raise ModelError("a fine-tuned network changed its backbone: pass the frozen backbone as the locator")
        locator = model.backbone
    return locate_liver(locator, working, model.config.cascade)


def segment_volume(
    model: SLPTNet, image: Source, locator: nn.Module | None = None, whole_volume: bool = False,
    overlap: float = 0.25, sw_batch_size: int | None = None,
) -> VolumePrediction:
    """The cascade on one image (a path, or an array / ``MetaTensor`` with its affine).

    Args:
        model: the prompt-tuned (or fine-tuned) network.
        locator: backbone of stage 1 (default: ``model.backbone``, the frozen backbone of a prompt model).
        whole_volume: skip stage 1 and slide the window over the whole working volume (the baseline of
            ``slpt bench infer``).
    """
    original, working = to_working(image, model.config.cascade)
    roi = roi_of(model, working, locator, whole_volume)
    crop = roi.box.crop(working)
    prediction = predict(model, crop[0].as_tensor(), overlap=overlap, sw_batch_size=sw_batch_size,
                         intensity=model.config.cascade.intensity.for_volume(working))
    return VolumePrediction(
        prediction=prediction, roi=roi, roi_affine=affine_of(crop), original_affine=affine_of(original),
        original_shape=tuple(int(s) for s in original.shape[1:]),
    )


def roi_volume(model: SLPTNet, image: Source, locator: nn.Module | None = None) -> tuple[torch.Tensor, Intensity]:
    """The liver ROI of an image on ``model``'s working grid, what stage 2 segments: -> ((X, Y, Z) HU, the model's
    intensity bound to the whole volume, which normalises it)."""
    _original, working = to_working(image, model.config.cascade)
    crop = roi_of(model, working, locator).box.crop(working)[0].as_tensor()
    return crop, model.config.cascade.intensity.for_volume(working)


def roi_prompt_probabilities(model: SLPTNet, image: Source, locator: nn.Module | None = None) -> np.ndarray:
    """(K, C, *roi) prompt probabilities inside the liver ROI of an image: what uncertainty scoring reads."""
    crop, intensity = roi_volume(model, image, locator)
    with torch.no_grad():
        return prompt_probabilities(model, crop, intensity=intensity).numpy()
