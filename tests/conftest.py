"""Fixtures shared by the whole suite: generated cohorts and a real MONAI Label server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores, many processes: keep each one to a single math thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A small MSD-layout synthetic cohort (24 cases, 16³), generated once per test session. Do not modify it."""
    from cohort.synth import generate_cohort

    root = tmp_path_factory.mktemp("cohort") / "studies"
    generate_cohort(root, cases=24, seed=7, size=16, progress=False)
    return root


@pytest.fixture(scope="session")
def backbone_file(tmp_path_factory) -> Path:
    """A small backbone checkpoint (random weights: server tests check the plumbing, not accuracy)."""
    from models.backbone import BackboneConfig, build_backbone, save_backbone

    path = tmp_path_factory.mktemp("backbone") / "backbone.pt"
    config = BackboneConfig(out_channels=4, channels=(8, 16, 32), strides=(2, 2))
    save_backbone(build_backbone(config), config, path)
    return path
