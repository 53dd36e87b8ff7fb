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
