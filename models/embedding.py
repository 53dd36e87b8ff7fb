"""Per-volume embeddings for TESLA's diversity selection (docs/design.md, "Embeddings").

Pooled bottleneck features cluster by anatomy and ignore acquisition, because instance normalisation
removes contrast and noise level. So the embedding concatenates, from ONE forward pass of the frozen
backbone over the volume at the cascade's coarse spacing (the pass that also finds the liver), four blocks (:func:`embedding_blocks` gives their sizes):

1. *encoder*: per-channel mean and standard deviation of the output of the FIRST convolution of every
   encoder stage (shallow stages included) — taken before that stage's normalisation, so contrast and
   noise survive;
2. *organ*: raw-HU statistics (mean, std, 5/25/50/75/95th percentiles) inside the organ the backbone
   predicts (``organ_class``, liver = 1), plus the organ's fraction of the body;
3. *body*: the same HU statistics inside the body (HU > -500);
4. *noise*: the image noise level — the median absolute high-pass residual ``x - gaussian(x, 1 voxel)``
   over soft-tissue voxels inside the body. Dose and reconstruction kernel set it; anatomy hardly does.

Dimensions have very different scales and the blocks very different sizes (the encoder block has
hundreds of dimensions, the others 1–8): the caller (``strategies``) standardises each dimension over
the pool and, given the block sizes, gives every block the same total weight
(``strategies.features.balance_blocks``). Otherwise the encoder statistics swamp the few intensity
statistics, and clusters follow anatomy rather than acquisition. The backbone never changes, so compute
this once per volume and store it, keyed by :data:`EMBEDDING_VERSION` as well as by the backbone.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from models.adapters import adapt_backbone, first_conv
from models.cascade import CascadeConfig, CoarsePass, coarse_pass, to_working
from models.errors import ModelError
from models.geometry import Source

#: Changes whenever the embedding's definition or layout changes: embeddings stored under an older
#: version must be recomputed, not mixed with new ones.
EMBEDDING_VERSION = 3
#: Voxels above this HU count as body (air and the scanner table's surroundings are below).
BODY_HU = -500.0
PERCENTILES = (5, 25, 50, 75, 95)
#: Soft-tissue HU range where the noise level is measured: excludes air, lung and bone, whose edges
#: dominate a high-pass residual.
SOFT_TISSUE_HU = (-150.0, 250.0)
#: Gaussian sigma (voxels) of the low-pass filter whose residual is the noise estimate.
NOISE_SIGMA_VOX = 1.0

_HU_STATS = 2 + len(PERCENTILES)


def embedding_blocks(backbone: nn.Module) -> tuple[int, int, int, int]:
    """Sizes of the embedding's consecutive blocks: (encoder, organ, body, noise); they sum to its length."""
    encoder = 2 * sum(first_conv(stage).out_channels for stage in adapt_backbone(backbone).stages)
    return encoder, _HU_STATS + 1, _HU_STATS, 1


def volume_embedding(backbone: nn.Module, image: Source, cfg: CascadeConfig = CascadeConfig()) -> np.ndarray:
    """Embed one CT volume (a path, or an array/``MetaTensor`` with its affine) on the cascade's coarse grid.

    Returns:
        float32 vector of length ``sum(embedding_blocks(backbone))``: encoder, organ, body, noise blocks.
    """
    _original, working = to_working(image, cfg)
    return embedding_from_pass(coarse_pass(backbone, working, cfg, collect_stats=True))


def embedding_from_pass(result: CoarsePass) -> np.ndarray:
    """The embedding of a volume from the backbone's coarse pass over it (collected with ``collect_stats``).

    The coarse pass is stage 1 of the cascade too (:mod:`models.cascade`), so a caller that needs both the liver
    ROI and the embedding runs the backbone once.
    """
    if not result.stage_stats:
        raise ModelError("the coarse pass was run without collect_stats: no encoder statistics to embed")
    hu, organ = result.coarse_hu, result.organ
    body = hu > BODY_HU
    organ_fraction = float(organ.sum()) / max(int(body.sum()), 1)
    features = [
        torch.cat(result.stage_stats).numpy(),
        _hu_stats(hu[organ]),
        [organ_fraction],
        _hu_stats(hu[body]),
        [_noise_level(hu, body)],
    ]
    return np.concatenate([np.asarray(f, dtype=np.float32) for f in features])


def _hu_stats(values: np.ndarray) -> np.ndarray:
    """(mean, std, percentiles) of HU values; zeros for an empty region."""
    if values.size == 0:
        return np.zeros(_HU_STATS, dtype=np.float32)
    return np.array([values.mean(), values.std(), *np.percentile(values, PERCENTILES)], dtype=np.float32)


def _noise_level(hu: np.ndarray, body: np.ndarray) -> float:
    """Median |hu - gaussian(hu)| over soft tissue inside the eroded body ((D, H, W) arrays); 0 if none.

    The median of the residual ignores the few organ edges left in the soft-tissue range; eroding the
    body drops its boundary with air.
    """
    residual = hu - ndimage.gaussian_filter(hu, NOISE_SIGMA_VOX)
    inside = ndimage.binary_erosion(body) & (hu > SOFT_TISSUE_HU[0]) & (hu < SOFT_TISSUE_HU[1])
    return float(np.median(np.abs(residual[inside]))) if inside.any() else 0.0
