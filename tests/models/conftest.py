"""Tiny synthetic CT volumes and a tiny backbone shared by the models tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.backbone import BackboneConfig
from models.cascade import CascadeConfig

torch.set_num_threads(1)

#: Tiny UNet: 3 stages, down-sampling factor 4, so 16³ volumes work.
TINY = BackboneConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1, out_channels=3)
ROI = (16, 16, 16)
#: The cascade at the scale of these 1 mm test volumes (the product's defaults are 2.5 mm and 5 mm).
GEOMETRY = {"cascade": CascadeConfig(spacing=(1.0, 1.0, 1.0), coarse_spacing=(2.0, 2.0, 2.0), margin_mm=3.0)}


def make_case(
    seed: int, size: int | tuple[int, int, int] = 16, noise: float = 20.0, tumour_hu: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """A body-like volume in HU with a bright sphere ("liver", class 1) holding a dark one ("tumour", 2).

    Returns:
        (image (D,H,W) float32 HU, label (D,H,W) uint8).
    """
    rng = np.random.default_rng(seed)
    shape = (size,) * 3 if isinstance(size, int) else size
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    centre = np.array([s / 2 for s in shape])[:, None, None, None] + rng.uniform(-1.5, 1.5, (3, 1, 1, 1))
    radius = min(shape) * rng.uniform(0.28, 0.36)
    distance = np.sqrt(((grid - centre) ** 2).sum(axis=0))
    tumour_centre = centre + rng.uniform(-0.3, 0.3, (3, 1, 1, 1)) * radius
    tumour = np.sqrt(((grid - tumour_centre) ** 2).sum(axis=0)) < radius * rng.uniform(0.3, 0.45)
    liver = distance < radius
    label = np.zeros(shape, dtype=np.uint8)
    label[liver] = 1
    label[liver & tumour] = 2
    image = np.full(shape, -80.0, dtype=np.float32)  # soft tissue / fat
    image[liver] = 110.0
    image[liver & tumour] = tumour_hu
    image += rng.normal(0.0, noise, shape).astype(np.float32)
    return image, label


@pytest.fixture(scope="session")
def tiny_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """Six labelled tiny cases (16³)."""
    return [make_case(seed) for seed in range(6)]
