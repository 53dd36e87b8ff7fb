"""Per-volume embeddings for TESLA's diversity selection (SPEC §2 "Embeddings").

Pooled bottleneck features cluster by anatomy and ignore acquisition, because instance normalisation
removes contrast and noise level. So the embedding concatenates, from ONE forward pass of the frozen
backbone at a fixed working size:

1. per-channel mean and standard deviation of the output of the FIRST convolution of every encoder stage
   (shallow stages included) — taken before that stage's normalisation, so contrast and noise survive;
2. raw-HU statistics (mean, std, 5/25/50/75/95th percentiles) inside the organ the backbone predicts
   (``organ_class``, liver = 1) and inside the body (HU > -500), plus the organ's fraction of the body.

Dimensions have very different scales: the caller (``strategies``) standardises each dimension over the
pool and may reduce with PCA. The backbone never changes, so compute this once per volume and store it.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Resize
from torch import nn

from models.adapters import adapt_backbone, first_conv
from models.preprocess import HU_WINDOW, VolumeSource, load_volume, window_hu

#: Voxels above this HU count as body (air and the scanner table's surroundings are below).
BODY_HU = -500.0
PERCENTILES = (5, 25, 50, 75, 95)


def volume_embedding(
    backbone: nn.Module,
    image_hu: VolumeSource,
    size: tuple[int, int, int] = (64, 64, 64),
    organ_class: int = 1,
    hu_window: tuple[float, float] = HU_WINDOW,
) -> np.ndarray:
    """Embed one CT volume.

    Args:
        backbone: the frozen pre-trained MONAI backbone (left in the train/eval mode it had).
        image_hu: (D, H, W) volume in HU, or a NIfTI path.
        size: working size the volume is resized to (multiples of the backbone's down-sampling factor).
        organ_class: upstream class whose predicted region gives the organ intensity statistics.
        hu_window: window used to preprocess the network input.

    Returns:
        float32 vector of length 2 * sum(stage channels) + 2 * (2 + len(PERCENTILES)) + 1.
    """
    volume = load_volume(image_hu).astype(np.float32)
    resized_hu = np.asarray(Resize(spatial_size=size, mode="trilinear")(volume[None]), dtype=np.float32)[0]
    device = next(backbone.parameters()).device
    x = torch.from_numpy(window_hu(resized_hu, hu_window))[None, None].to(device)

    stats: list[torch.Tensor] = []

    def channel_stats(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        flat = output.float().flatten(2)[0]  # (C, voxels)
        stats.extend([flat.mean(dim=1), flat.std(dim=1)])

    handles = [first_conv(stage).register_forward_hook(channel_stats) for stage in adapt_backbone(backbone).stages]
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            organ = (backbone(x).argmax(dim=1)[0] == organ_class).cpu().numpy()
    finally:
        for handle in handles:
            handle.remove()
        backbone.train(was_training)

    body = resized_hu > BODY_HU
    organ_fraction = float(organ.sum()) / max(int(body.sum()), 1)
    features = [
        torch.cat(stats).cpu().numpy(), _hu_stats(resized_hu[organ]), _hu_stats(resized_hu[body]), [organ_fraction]
    ]
    return np.concatenate([np.asarray(f, dtype=np.float32) for f in features])


def _hu_stats(values: np.ndarray) -> np.ndarray:
    """(mean, std, percentiles) of HU values; zeros for an empty region."""
    if values.size == 0:
        return np.zeros(2 + len(PERCENTILES), dtype=np.float32)
    return np.array([values.mean(), values.std(), *np.percentile(values, PERCENTILES)], dtype=np.float32)
