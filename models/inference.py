"""Whole-volume prediction with the K prompts: mean probability, label map, disagreement.

The volume is windowed with :func:`models.preprocess.window_hu` and segmented with MONAI's
``sliding_window_inference`` at the model's ``roi_size`` (one window, padded, when the volume is smaller).
Each window runs the K prompts in one batched pass. The prediction is the mean of the K softmax maps; the
voxel-wise disagreement is the mean pairwise Jensen–Shannon divergence between the K maps (natural log,
in [0, ln 2]); it is zero for a fine-tuned model (K = 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.transforms import Resize

from models.device import autocast
from models.preprocess import VolumeSource, load_volume, window_hu
from models.slpt import SLPTNet

_EPS = 1e-8


@dataclass
class Prediction:
    """Result of :func:`predict` for a volume of shape (D, H, W).

    Attributes:
        mean_prob: (C, D, H, W) float32, mean of the K prompts' softmax maps.
        label: (D, H, W) uint8, argmax of ``mean_prob``.
        disagreement: (D, H, W) float32, mean pairwise JS divergence of the K softmax maps.
        foreground_any: (D, H, W) bool, voxels that at least one prompt labels non-background (the
            region over which TESLA averages uncertainty).
    """

    mean_prob: np.ndarray
    label: np.ndarray
    disagreement: np.ndarray
    foreground_any: np.ndarray


def prompt_probabilities(
    model: SLPTNet,
    image_hu: VolumeSource,
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    roi_size: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Softmax maps of every prompt: volume (D, H, W) in HU -> (K, C, D, H, W) float32 on the CPU.

    ``roi_size`` is the sliding window (default: the model's training ``roi_size``); a window as large as
    the volume runs it in one pass, which is faster than several overlapping patches.
    """
    volume = window_hu(load_volume(image_hu), model.config.hu_window)
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
            x = torch.from_numpy(volume)[None, None].to(device)
            blended = sliding_window_inference(
                x, roi_size=roi_size or model.config.roi_size, sw_batch_size=sw_batch_size, predictor=all_prompts,
                overlap=overlap, mode="gaussian",
            )
    finally:
        model.train(was_training)
    return torch.as_tensor(blended).reshape(k, c, *volume.shape).float().cpu()


def pairwise_js_divergence(probs: torch.Tensor) -> torch.Tensor:
    """Mean pairwise Jensen–Shannon divergence: (K, C, *S) -> (*S); zeros when K = 1."""
    k = probs.shape[0]
    if k < 2:
        return torch.zeros(probs.shape[2:], dtype=probs.dtype)

    def entropy(p: torch.Tensor) -> torch.Tensor:
        return -(p * torch.log(p + _EPS)).sum(dim=0)

    pairs = list(combinations(range(k), 2))
    total = torch.zeros(probs.shape[2:], dtype=probs.dtype)
    for i, j in pairs:
        mixture = 0.5 * (probs[i] + probs[j])
        total += entropy(mixture) - 0.5 * (entropy(probs[i]) + entropy(probs[j]))
    return (total / len(pairs)).clamp_min(0.0)


def predict(
    model: SLPTNet,
    image_hu: VolumeSource,
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    roi_size: tuple[int, int, int] | None = None,
) -> Prediction:
    """Segment one CT volume (D, H, W) in HU (array or NIfTI path) with all K prompts.

    See :func:`prompt_probabilities` for the sliding-window arguments.
    """
    probs = prompt_probabilities(model, image_hu, overlap=overlap, sw_batch_size=sw_batch_size, roi_size=roi_size)
    mean_prob = probs.mean(dim=0)
    return Prediction(
        mean_prob=mean_prob.numpy().astype(np.float32),
        label=mean_prob.argmax(dim=0).numpy().astype(np.uint8),
        disagreement=pairwise_js_divergence(probs).numpy().astype(np.float32),
        foreground_any=(probs.argmax(dim=1) > 0).any(dim=0).numpy(),
    )


def working_resolution_volume(image_hu: VolumeSource, roi: tuple[int, int, int]) -> np.ndarray:
    """The whole volume (D, H, W) in HU, array or NIfTI path, resized (trilinear) to ``roi``: (*roi) float32."""
    volume = load_volume(image_hu).astype(np.float32)
    return np.asarray(Resize(spatial_size=tuple(roi), mode="trilinear")(volume[None]))[0]


def working_resolution_probs(model: SLPTNet, image_hu: VolumeSource, roi: tuple[int, int, int]) -> np.ndarray:
    """(K, C, *roi) prompt probabilities of a volume resized to one ROI: one batched forward pass.

    The working resolution of uncertainty scoring (server and simulator alike), so each volume costs one pass.
    """
    with torch.no_grad():
        return prompt_probabilities(model, working_resolution_volume(image_hu, roi)).numpy()
