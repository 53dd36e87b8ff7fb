"""The inputs of a ``--synthetic`` run: the generated downstream cohort and a backbone pre-trained on a separate
upstream cohort, made in the run folder (``--out``) by the profile's recipe.

A study makes its backbone once: the run keeps it in its records (:mod:`sim.kept_backbone`), and every later run on
those records, on any machine, uses that file and only generates the downstream cohort (:func:`synthetic_cohort`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import torch

from models.training import progress_bar
from sim.profiles import SimProfile
from storage.atomic import atomic_path


def prepare_synthetic(out: Path, profile: SimProfile) -> tuple[Path, Path]:
    """Make (once) the downstream cohort and the upstream-pretrained backbone of a ``--synthetic`` run.

    The downstream cohort (seed ``profile.cohort_seed``) goes to ``out/cohort``; the backbone is pre-trained on a
    separate upstream cohort (``upstream=True``, seed ``profile.upstream_seed``) into ``out/backbone.pt``, at the
    profile's working and coarse spacings. Both are reused when present. Pre-training runs on one thread, so the
    downstream cohort is generated on the other core meanwhile. Returns (cohort folder, backbone checkpoint).
    """
    cohort_dir, upstream_dir, backbone = out / "cohort", out / "upstream", out / "backbone.pt"
    if backbone.is_file():
        return synthetic_cohort(out, profile), backbone
    _generate_once(upstream_dir, partial(_generate_cohort, profile=profile, upstream=True))
    with ProcessPoolExecutor(1) as side:
        cohort_made = side.submit(
            _generate_once, cohort_dir, partial(_generate_cohort, profile=profile, upstream=False, progress=False)
        )
        _pretrain_synthetic(upstream_dir, backbone, profile)
        cohort_made.result()
    return cohort_dir, backbone


def synthetic_cohort(out: Path, profile: SimProfile) -> Path:
    """The downstream cohort alone, made once in ``out/cohort`` (a run whose records keep its backbone)."""
    _generate_once(out / "cohort", partial(_generate_cohort, profile=profile, upstream=False))
    return out / "cohort"


def _generate_cohort(folder: Path, profile: SimProfile, upstream: bool, progress: bool = True) -> Path:
    """The run's downstream cohort, or (``upstream``) its upstream pre-training cohort, into ``folder``."""
    from cohort.synth import generate_cohort

    seed, cases = (profile.upstream_seed, profile.upstream_cases) if upstream else (profile.cohort_seed, profile.cases)
    return generate_cohort(folder, cases, seed, profile.size, upstream=upstream, progress=progress)


def _pretrain_synthetic(upstream_dir: Path, backbone: Path, profile: SimProfile) -> None:
    """Pre-train the run's backbone on the upstream cohort, on one thread (the other core generates the downstream
    cohort meanwhile)."""
    from models.pretrain import PretrainConfig, pretrain_backbone

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with progress_bar("pre-training the backbone") as report:
            pretrain_backbone(
                upstream_dir, backbone, profile.backbone, epochs=profile.pretrain_epochs, progress=report,
                schedule=PretrainConfig(
                    patch_size=(profile.pretrain_patch,) * 3, spacing=profile.spacing,
                    coarse_spacing=profile.coarse_spacing, batch_size=profile.pretrain_batch,
                    denoise_weight=profile.pretrain_denoise,
                ),
            )
    finally:
        torch.set_num_threads(threads)


def _generate_once(folder: Path, generate: Callable[[Path], Path]) -> None:
    """Generate into a temporary folder moved into place when complete, so an interrupted generation is redone."""
    if (folder / "dataset.json").is_file():
        return
    with atomic_path(folder) as scratch:
        generate(scratch)
